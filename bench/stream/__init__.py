"""Speed layer (Bytewax) throughput, memory and latency vs plain-Python loops: same Kafka messages,
same run.

    .venv/bin/python -m bench.stream [--visitors 200000] [--repeat 2] [--latency-seconds 60]
    .venv/bin/python -m bench.stream --visitors 5000000 --stages sessions   # the big memory run

Starts a throw-away broker (free ports), simulates one day for --visitors users (faults on; about
a third of them visit that day) and writes it through the collector's ingest path into two bench
topics shaped like shop.events (6 partitions) and its DLQ (3). Each throughput figure compares,
over both topics read to EOF, each run in its own process (clean heap, its own RSS), fastest of
--repeat interleaved runs, outputs compared by digest:
  - Bytewax: the repo's steps wired as in streaming.flows, one worker in-process (run_main, no
    recovery unless --recovery), KafkaSource configured as streaming.run configures it;
  - plain loop: one confluent_kafka consumer over the same partitions, calling the flow's own
    step logic per shard (dedupe, fold, merge), without Bytewax's runtime (see loops.py).
Rates are records/s of wall clock and records per CPU-second of the process (the 2 CPUs are shared).
  decode    the decode_event step vs decode_event(value) (the target's peer) and vs decode_message,
            the step's own function on the message KafkaSource builds (the same work)
  1m        decode -> key_by_shard -> dedupe -> fold_1m -> merge_1m (+ late counts)
  sessions  decode -> key_by_shard -> dedupe -> track_sessions -> merge_active_sessions;
            RSS at 25/50/75/100 % of the input
  latency   the production process (python -m bytewax.run streaming.run:flow, 1 worker, recovery
            every 5 s, Parquet + Kafka sinks). Its sustained rate: replaying the day to EOF. Then
            live traffic at 50 % of it, as the collector writes it (prepared ahead, received_at and
            the record timestamp stamped when sent), with allowed lateness 0 (--latency-lateness)
            and bot bursts whose 5th event raises an alert at once (the per-event path).
            Latency = first sight of the row - the record timestamp (the collector's receive
            time), on the Kafka output topics (shop.alerts, shop.metrics.10s) and in the Parquet
            tables, after a warm-up (a live run's merge steps hold windows for shards that have
            not sent a mark yet, up to 3 x SHOPLAKE_STREAM_IDLE_SECONDS).

Modules: __main__ (options, input, report), day (the input), flows (the Bytewax side), loops
(the plain-loop peers), runs (one measured run per process), tally (outputs as counts and a
digest), latency (the production process).

Sub-shards used to be CRC32 % 8 of the key, sharing a factor with the producer's CRC32 % 6
partitioner, so half the shards never got a record; streaming/events.py now buckets by blake2b.
"""
