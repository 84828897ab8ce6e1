"""`make bench`: the receiver's performance figures against baselines measured in the same run.

Run with `python -m tests.bench` (about 3 minutes) or `python -m tests.bench --quick` (about 1.5 minutes).
Every server, the load generator and each baseline run as processes of their own on loopback ports,
started and killed by the harness. Module names avoid `test_*` so pytest collects nothing here.

Modules: `plan` (counts and durations), `harness` (the run), `context` (what scenarios share),
`ack` / `completions` / `s3` / `upstream` / `postgres` (the scenarios), `report` (table and JSON);
`procs` and `proc_info` (processes and /proc), `launch` (the servers as processes), `samples`,
`seed` (jobs written into the receiver's store); the servers `bare`, `result_server`,
`canned`; the load generator `loadgen` with `workload`, `http1`, `pacer` and `watcher`, run by
`drive`; the baselines `polling` and `download_baseline`; `stats`; `profile` (py-spy, `--profile`).
"""
