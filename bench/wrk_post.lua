-- wrk script for bench/collector.py: POST pre-built batch bodies (one per line) in turn.
local bodies = {}
local i = 0
local headers = {
  ["X-Write-Key"] = "test-replay-key",
  ["Content-Type"] = "application/json",
  ["X-Shoplake-Replay"] = "1",
}

init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = math.random(#bodies)
end

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/events", headers, bodies[i])
end

done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d non2xx=%d socket_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
