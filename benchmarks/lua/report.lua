-- Appended to every benchmark script: one machine-readable line with wrk's own figures.
-- Latencies are in microseconds, taken from wrk's HdrHistogram-like stats (all threads).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
    .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
    .. '"lat_min":%d,"lat_max":%d,"lat_mean":%.3f,"lat_stdev":%.3f,'
    .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
