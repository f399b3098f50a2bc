# Worker with Ruby's dalli (Debian: ruby-dalli): get reserves a job, delete acks
# it once it is done. A worker that dies before delete loses nothing: mcbridge
# puts the job back in the queue when the connection closes.
# usage: ruby worker.rb SERVERS QUEUE[,QUEUE...] [MAX] [IDLE_SECONDS] [crash]
require "dalli"
require "json"

servers, queues = ARGV[0].split(","), ARGV[1].split(",")
max = Integer(ARGV[2] || 0)     # stop after MAX jobs (0: no limit)
idle = Float(ARGV[3] || 5)      # stop after IDLE_SECONDS without a job
crash = ARGV[4] == "crash"      # demo: die while holding a job
$stdout.sync = true

mc = Dalli::Client.new(servers, socket_timeout: 6)

done = 0
last_job = Time.now
while max.zero? || done < max
  jobs = mc.get_multi(*queues) # one job per queue: { queue => job }
  if jobs.empty?
    break if Time.now - last_job > idle
    sleep 0.1
    next
  end
  jobs.each do |queue, job|
    if crash
      puts "crashed holding #{job.to_json}"
      exit!(3)
    end
    puts "consumed #{job.to_json}" # process the job here
    mc.delete(queue) or warn("delete #{queue}: not found (lease ran out?)")
    done += 1
    last_job = Time.now
  end
end
