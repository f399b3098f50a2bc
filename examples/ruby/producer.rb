# Producer with Ruby's dalli (Debian: ruby-dalli): enqueue COUNT jobs.
# usage: ruby producer.rb SERVERS QUEUE COUNT [BODY_BYTES]  (SERVERS: host:port[,host:port...])
require "dalli"

servers, queue, count, body_bytes = ARGV[0].split(","), ARGV[1], Integer(ARGV[2]), Integer(ARGV[3] || 0)

# socket_timeout (default 1 s) must exceed mcbridge's confirm_timeout (5s):
# set waits for RabbitMQ's publisher confirm.
mc = Dalli::Client.new(servers, socket_timeout: 6)

1.upto(count) do |i|
  # Marshal-serialized (flags 1), zlib-compressed above 4 KiB (flags |= 2).
  job = { "id" => i, "body" => "payload #{i} " + "x" * body_bytes }
  mc.set(queue, job) or abort("set #{queue}: not stored") # errors raise Dalli::RingError
  puts "stored #{i}"
  $stdout.flush
end
