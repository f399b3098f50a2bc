# dalli behaviours that matter on a queue. usage: HOST PORT QUEUE
require "dalli"
host, port, q = ARGV
Dalli.logger.level = Logger::FATAL
$stdout.sync = true
mc = Dalli::Client.new("#{host}:#{port}")
puts "delete_miss=#{mc.delete(q).inspect}"
puts "socket_timeout=#{Dalli::Protocol::Binary::DEFAULTS[:socket_timeout]}"
t = Time.now
v = mc.get("#{q}/t=300")
puts "wait_under_timeout=#{v.inspect} ms=#{((Time.now - t) * 1000).to_i}"
# A wait above socket_timeout: dalli reconnects and sends the get again, and
# again (each connect resets its failure count), so it never returns.
mc = Dalli::Client.new("#{host}:#{port}", socket_timeout: 0.3)
waiter = Thread.new { mc.get("#{q}/t=1500") }
puts "wait_over_timeout=#{waiter.join(2) ? waiter.value.inspect : "retries_forever"}"
exit!(0)
