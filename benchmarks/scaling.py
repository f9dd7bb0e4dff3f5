"""Data-parallel scaling: training images/second of 1 process against N processes, each
pinned to its own CPU core, with `keras-unet train --strategy data-parallel`'s machinery
(`keras_unet.distribution`: JAX backend, `keras.distribution.DataParallel`, Gloo all-reduce
over loopback).

Weak scaling, as data-parallel training is used: every process takes `--per-process-batch`
images per step, so N processes train on a global batch N times as large. For each process
count the benchmark starts that many worker processes (this module with `--worker`), each
building the seed-size U-Net (`keras_unet.UNet(input_shape=(128, 128, 3))`, 31,031,745
parameters), compiled as `keras-unet train` compiles it (Adam, `bce_dice`, IoU and Dice), and
fed by `keras_unet.data.load_dataset` on real images (augmented, as training is). Per step,
after `--warmup` untimed steps: `time.perf_counter` between the ends of consecutive steps
(each step's loss is read back, so the step has finished).

What it reports, per process count:

- `step_p50_ms`, `step_p90_ms`: one training step (all processes step together);
- `train_ips`: global batch / step p50;
- `scaling_efficiency`: `train_ips(N) / (N * train_ips(1))` (1.0 = perfect);
- `allreduce_ms`: the all-reduce of the gradients on its own, timed after training: one
  float32 tensor per trainable variable, as the training step sends them (XLA on CPU gives
  Gloo one tensor at a time, so each tensor costs a round trip); `allreduce_flat_ms`: the same
  volume as one flat buffer;
- `communication_share`: `allreduce_ms / step_p50_ms`, the share of a step the gradient
  exchange would take without overlap (XLA on CPU does not overlap it with compute);
- `overhead_ms`: `step_p50_ms(N) - step_p50_ms(1)`: everything that distribution adds to a
  step on top of the same work per core (all-reduce, waiting for the slower process);
- `cpu_share` (per process): CPU time / wall time over the timed steps; below ~0.9 a process
  waited, for its partner or for a core that other work on the machine held;
- `cpu_s_per_image`, `work_efficiency`: CPU seconds of all processes per image, and the
  baseline's over this one's: the extra work distribution costs, whatever else runs on the
  machine (`scaling_efficiency` is the one that counts where the cores are yours alone);
- `independent_ips`, `efficiency_vs_independent` (the control, on by default): N
  single-process trainings run side by side on the same cores right after, sharing nothing;
  data-parallel images/s over theirs is the cost of the exchange alone when other work on the
  machine takes its share of the cores.

And on paper (`on_paper`): the all-reduce volume per step (4 bytes per parameter), the bytes a
ring all-reduce sends per host (`2 (N - 1) / N` times that), and the link speed that keeps
8 hosts at >= 80% efficiency given a step's compute time, assuming no overlap.

Example:
```bash
python -m keras_unet.benchmarks.scaling --processes 1 2 --steps 6 --out scaling.json
```
```python
from keras_unet.benchmarks.scaling import link_speed_for_efficiency

link_speed_for_efficiency(31_031_745, hosts=8, step_s=1.0)   # bytes/s per host
```
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

SEED_PARAMS = 31_031_745


def ring_allreduce_bytes(params, hosts, bytes_per_param=4):
    """Bytes each host sends (and receives) in one ring all-reduce of `params` values:
    `2 (hosts - 1) / hosts` times the vector (reduce-scatter, then all-gather).

    Example:
    ```python
    ring_allreduce_bytes(31_031_745, hosts=8) / 1e6   # 217.2 MB per host per step
    ```
    """
    return 2 * (hosts - 1) / hosts * params * bytes_per_param


def link_speed_for_efficiency(params, hosts, step_s, efficiency=0.8, bytes_per_param=4):
    """Bytes/second per host that keep data-parallel efficiency at `efficiency` or more.

    With no overlap of communication and compute, efficiency = compute / (compute + comm),
    so comm may take at most `step_s * (1 / efficiency - 1)`; the ring all-reduce must move
    `ring_allreduce_bytes` in that time.

    Args:
        params: trainable parameters (one gradient value each).
        hosts: processes (machines) exchanging gradients.
        step_s: compute time of one step on one host, in seconds.
        efficiency: the efficiency to keep.
        bytes_per_param: 4 for float32 gradients.

    Example:
    ```python
    link_speed_for_efficiency(31_031_745, hosts=8, step_s=1.0) * 8 / 1e9   # 6.95 Gbit/s
    ```
    """
    budget = step_s * (1.0 / efficiency - 1.0)
    return ring_allreduce_bytes(params, hosts, bytes_per_param) / budget


def on_paper(params, step_s, hosts=8, efficiency=0.8):
    """The figures of the module docstring's "on paper" paragraph, as a dict.

    Example:
    ```python
    on_paper(31_031_745, step_s=4.2)["link_gbit_s"]   # 1.65: Gbit/s per host for 8 hosts at 80%
    ```
    """
    return {
        "params": params,
        "allreduce_volume_mb": params * 4 / 1e6,
        "hosts": hosts,
        "ring_bytes_per_host_mb": ring_allreduce_bytes(params, hosts) / 1e6,
        "step_compute_s": step_s,
        "efficiency": efficiency,
        "link_gbit_s": link_speed_for_efficiency(params, hosts, step_s, efficiency) * 8 / 1e9,
    }


def _jax_version():
    from importlib import metadata

    try:
        return metadata.version("jax")
    except metadata.PackageNotFoundError:
        return None


# -- the driver --------------------------------------------------------------------------------


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pin(core):
    def pin():
        os.sched_setaffinity(0, {core})

    return pin


def run_processes(count, args, folder, independent=False):
    """Start `count` workers, worker i pinned to core `args.cores[i]`; returns their result
    dicts, or one dict with `error` (a failed configuration is recorded, not fatal).

    `independent=True`: `count` single-process trainings side by side, sharing nothing (the
    control: what the cores deliver at that moment without any exchange)."""
    port = _free_port()
    tag = f"n{count}{'_independent' if independent else ''}"
    env = {**os.environ, "KERAS_BACKEND": "jax",
           # Compiled initializers are shared by the configurations (not what is timed).
           "JAX_COMPILATION_CACHE_DIR": os.path.join(folder, "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           # One core each: XLA's and TensorFlow's thread pools would otherwise size
           # themselves to the machine and fight over the one core they are pinned to.
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    processes, results, logs = [], [], []
    for i in range(count):
        result = os.path.join(folder, f"{tag}_p{i}.json")
        log = open(os.path.join(folder, f"{tag}_p{i}.log"), "w")
        cluster = (["--num-processes", "1", "--process-id", "0"] if independent else
                   ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count),
                    "--process-id", str(i)])
        command = [sys.executable, "-m", "keras_unet.benchmarks.scaling", "--worker", *cluster,
                   "--result", result, "--per-process-batch",
                   str(args.per_process_batch), "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--image-size", str(args.image_size), "--filters",
                   str(args.filters), "--depth", str(args.depth), "--allreduce-runs",
                   str(args.allreduce_runs)] + (["--data", args.data] if args.data else [])
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          preexec_fn=_pin(args.cores[i % len(args.cores)])))
        results.append(result)
        logs.append(log)
    try:
        statuses = [process.wait(timeout=args.timeout) for process in processes]
    except subprocess.TimeoutExpired:
        statuses = None
    finally:
        for process, log in zip(processes, logs):
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    if statuses != [0] * count:
        tail = open(os.path.join(folder, f"{tag}_p0.log")).read()[-600:]
        return [{"num_processes": count, "error": f"exit statuses {statuses}: {tail}"}]
    loaded = []
    for path in results:
        with open(path) as f:
            loaded.append(json.load(f))
    return loaded


def benchmark_scaling(process_counts=(1, 2), per_process_batch=2, steps=6, warmup=2,
                      image_size=128, filters=64, depth=4, data=None, cores=None, allreduce_runs=5,
                      timeout=900, control=True, out=None, verbose=True):
    """Images/second of data-parallel training on 1..N processes, one core each.

    Args:
        process_counts: process counts to measure; the first is the baseline (normally 1).
        per_process_batch: images per process per step.
        steps: timed steps per configuration.
        warmup: untimed steps first (compilation, the data cache).
        image_size, filters, depth: the model (128, 64, 4: the seed-size U-Net).
        data: folder with images/ and masks/ (default: the shipped nuclei set).
        cores: the cores to pin workers to, one each (default: the first ones available).
        allreduce_runs: timed all-reduces of the gradients' volume.
        timeout: seconds a configuration may take before it is recorded as failed.
        control: also run N independent single-process trainings side by side for each N > 1
            (`independent_ips`, `efficiency_vs_independent`).
        out: JSON file to write, or None.
        verbose: print the table.

    Returns:
        dict with `rows` (one per process count), `on_paper`, `config`, `environment`.

    Example:
    ```python
    result = benchmark_scaling((1, 2), image_size=32, filters=4, depth=2, steps=3, warmup=1)
    ```
    """
    import numpy as np

    from keras_unet.benchmarks.environment import collect_environment
    from keras_unet.benchmarks.report import output_path
    from keras_unet.runtime.files import write_text_atomic

    cores = list(cores or sorted(os.sched_getaffinity(0)))
    settings = argparse.Namespace(per_process_batch=per_process_batch, steps=steps, warmup=warmup,
                                  image_size=image_size, filters=filters, depth=depth, data=data,
                                  cores=cores, allreduce_runs=allreduce_runs, timeout=timeout)
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_unet_scaling_") as folder:
        for count in process_counts:
            load_before = os.getloadavg()[0]
            raws = run_processes(count, settings, folder)
            row = {"num_processes": count, "load_avg_before": load_before}
            if "error" in raws[0]:
                rows.append({**row, "error": raws[0]["error"]})
                continue
            raw = raws[0]
            # CPU seconds all processes spent per step, and the share of the wall time each
            # process had its core busy: below ~0.9 it waited (for its partner, or for a
            # core that other work on the machine held).
            cpu = sum(np.median(r["step_cpu_s"]) for r in raws)
            shares = [float(np.sum(r["step_cpu_s"]) / np.sum(r["step_times_s"])) for r in raws]
            step = np.asarray(raw["step_times_s"]) * 1000
            allreduce = np.asarray(raw["allreduce_times_s"]) * 1000
            flat = np.asarray(raw["allreduce_flat_times_s"]) * 1000
            row.update({
                "devices": raw["devices"], "global_batch": raw["global_batch"], "params": raw["params"],
                "step_p50_ms": float(np.percentile(step, 50)),
                "step_p90_ms": float(np.percentile(step, 90)),
                "step_times_ms": step.tolist(),
                "train_ips": float(raw["global_batch"] * 1000 / np.percentile(step, 50)),
                "tensors": raw["tensors"],
                "allreduce_ms": float(np.median(allreduce)) if count > 1 else 0.0,
                "allreduce_flat_ms": float(np.median(flat)) if count > 1 else 0.0,
                "build_s": raw["build_s"], "fit_s": raw["fit_s"],
                "cpu_s_per_image": float(cpu / raw["global_batch"]), "cpu_share": shares,
            })
            row["communication_share"] = row["allreduce_ms"] / row["step_p50_ms"]
            if control and count > 1:
                # The same cores at about the same moment, training side by side without
                # exchanging anything: on a machine shared with other work, the fair baseline.
                alone = run_processes(count, settings, folder, independent=True)
                if "error" not in alone[0]:
                    row["independent_ips"] = float(sum(
                        r["global_batch"] * 1000 / np.percentile(np.asarray(r["step_times_s"]) * 1000, 50)
                        for r in alone))
                    row["efficiency_vs_independent"] = row["train_ips"] / row["independent_ips"]
                    row["independent_cpu_share"] = [
                        float(np.sum(r["step_cpu_s"]) / np.sum(r["step_times_s"])) for r in alone]
            rows.append(row)
    base = next((r for r in rows if "error" not in r and r["num_processes"] == process_counts[0]), None)
    for row in rows:
        if base is not None and "error" not in row:
            ideal = base["train_ips"] * row["num_processes"] / base["num_processes"]
            row["scaling_efficiency"] = row["train_ips"] / ideal
            row["work_efficiency"] = base["cpu_s_per_image"] / row["cpu_s_per_image"]
            row["overhead_ms"] = row["step_p50_ms"] - base["step_p50_ms"]
    params = base["params"] if base else SEED_PARAMS
    # Compute time of one step on one host: the baseline's step (one core, no exchange).
    paper = on_paper(params, (base["step_p50_ms"] / 1000) if base else 1.0)
    result = {
        "rows": rows, "on_paper": paper,
        "config": {"process_counts": list(process_counts), "per_process_batch": per_process_batch,
                   "steps": steps, "warmup": warmup, "image_size": image_size, "filters": filters,
                   "depth": depth, "data": str(data) if data else "shipped nuclei set",
                   "cores": cores, "augment": True, "loss": "bce_dice", "optimizer": "adam",
                   "collectives": "gloo over loopback", "jax": _jax_version()},
        "environment": collect_environment(threads=1),
    }
    if verbose:
        print(format_table(result))
    if out:
        write_text_atomic(output_path(out), json.dumps(result, indent=2))
    return result


def format_table(result):
    """The printed table of `benchmark_scaling`'s result."""
    lines = [f"{'processes':>9} {'global batch':>12} {'step p50 ms':>11} {'step p90 ms':>11} "
             f"{'images/s':>8} {'efficiency':>10} {'all-reduce ms':>13} {'flat ms':>7} "
             f"{'comm share':>10} {'overhead ms':>11} {'cpu share':>11} {'work eff.':>9}"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"{row['num_processes']:>9} failed: {row['error'][:200]}")
            continue
        lines.append(
            f"{row['num_processes']:>9} {row['global_batch']:>12} {row['step_p50_ms']:>11.0f} "
            f"{row['step_p90_ms']:>11.0f} {row['train_ips']:>8.2f} "
            f"{row.get('scaling_efficiency', float('nan')):>10.2f} {row['allreduce_ms']:>13.1f} "
            f"{row['allreduce_flat_ms']:>7.1f} {row['communication_share']:>10.1%} "
            f"{row.get('overhead_ms', float('nan')):>11.0f} "
            f"{'/'.join(f'{share:.2f}' for share in row['cpu_share']):>11} "
            f"{row.get('work_efficiency', float('nan')):>9.2f}")
        if "independent_ips" in row:
            lines.append(
                f"{'':>9} control: {row['num_processes']} independent processes side by side "
                f"{row['independent_ips']:.2f} images/s (cpu share "
                f"{'/'.join(f'{share:.2f}' for share in row['independent_cpu_share'])}); "
                f"data-parallel reaches {row['efficiency_vs_independent']:.2f} of it")
    paper = result["on_paper"]
    lines.append(
        f"on paper: {paper['params']:,} parameters -> {paper['allreduce_volume_mb']:.1f} MB of float32 "
        f"gradients per step; a ring all-reduce over {paper['hosts']} hosts sends "
        f"{paper['ring_bytes_per_host_mb']:.1f} MB per host; with {paper['step_compute_s']:.2f} s of "
        f"compute per step, >= {paper['efficiency']:.0%} efficiency needs >= "
        f"{paper['link_gbit_s']:.2f} Gbit/s per host (no overlap)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_unet.benchmarks.scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="process counts to measure, the baseline first (default: 1 2)")
    parser.add_argument("--per-process-batch", type=int, default=2, help="images per process per step (default: 2)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps (default: 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--image-size", type=int, default=128, help="square input size (default: 128)")
    parser.add_argument("--filters", type=int, default=64, help="first-stage filters (default: 64, the seed)")
    parser.add_argument("--depth", type=int, default=4, help="downsamplings (default: 4, the seed)")
    parser.add_argument("--data", default=None, help="images/ + masks/ folder (default: shipped nuclei set)")
    parser.add_argument("--cores", type=int, nargs="+", default=None,
                        help="cores to pin the processes to, one each (default: all available)")
    parser.add_argument("--allreduce-runs", type=int, default=5, help="timed all-reduces (default: 5)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per configuration (default: 900)")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the independent side-by-side runs (the baseline on a shared machine)")
    parser.add_argument("--out", default="scaling_benchmark.json", help="JSON output (default: scaling_benchmark.json)")
    # One worker (started by the driver).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        from keras_unet.benchmarks.scaling_worker import run_worker

        return run_worker(args)
    result = benchmark_scaling(tuple(args.processes), args.per_process_batch, args.steps, args.warmup,
                               args.image_size, args.filters, args.depth, args.data, args.cores,
                               args.allreduce_runs, args.timeout, not args.no_control, args.out)
    print(f"wrote {args.out}")
    return 1 if any("error" in row for row in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
