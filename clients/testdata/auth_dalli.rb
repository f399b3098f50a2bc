# dalli logging in with username:/password: (SASL PLAIN over the binary
# protocol). usage: HOST PORT QUEUE USER PASSWORD
require "dalli"
host, port, q, user, pass = ARGV
Dalli.logger.level = Logger::FATAL
$stdout.sync = true
def client(host, port, user, pass)
  Dalli::Client.new("#{host}:#{port}", username: user, password: pass, raw: true, socket_max_failures: 1)
end
begin
  puts "wrong_password_set=#{client(host, port, user, "wrong").set(q, "x").inspect}"
rescue => e
  puts "wrong_password_set=#{e.class}"
end
mc = client(host, port, user, pass)
puts "set=#{mc.set(q, "hello") ? "true" : "false"}"
puts "get=#{mc.get(q).inspect}"
puts "delete=#{mc.delete(q).inspect}"
