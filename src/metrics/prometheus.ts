import { status } from "@grpc/grpc-js";
import {
  Counter,
  collectDefaultMetrics,
  exponentialBuckets,
  Gauge,
  Histogram,
  Registry,
} from "prom-client";
import type { StreamName, TerminationCause } from "../exec/exec.ts";
import type { ImageOp, Metrics, TransferDirection } from "./metrics.ts";

/** Counts read at scrape time from the live router. */
export interface LiveCounts {
  tasks(): number;
  execs(): number;
}

/** gRPC status names by code (0 → "OK"), the `code` label of taskrouter_rpcs_total. */
const CODE_NAMES = new Map<number, string>(
  Object.entries(status)
    .filter((e): e is [string, number] => typeof e[1] === "number")
    .map(([name, code]) => [code, name]),
);

/**
 * The router's Prometheus metrics (prom-client), in a registry of its own
 * (several routers in one process keep theirs apart), with Node's default
 * process metrics. Names are documented in README.md ("Metrics").
 */
export class PrometheusMetrics implements Metrics {
  readonly registry = new Registry();
  private readonly started: Counter<"runtime">;
  private readonly finished: Counter<"runtime" | "cause">;
  private readonly startLatency: Histogram<"runtime">;
  private readonly outBytes: Counter<"stream">;
  private readonly inBytes: Counter;
  private readonly throughput: Histogram<"stream">;
  private readonly imageOps: Histogram<"op" | "outcome">;
  private readonly registryBytesTotal: Counter<"direction">;
  private readonly transfers: Counter<"direction" | "result">;
  private readonly transferSeconds: Histogram<"direction">;
  private readonly rpcs: Counter<"method" | "code">;

  constructor(live: LiveCounts) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.started = new Counter({
      name: "taskrouter_execs_started_total",
      help: "Execs whose process was started, by runtime",
      labelNames: ["runtime"],
      registers,
    });
    this.finished = new Counter({
      name: "taskrouter_execs_finished_total",
      help: "Execs that ended, by runtime and cause (exited, signaled, timeout, killed, task_terminated, oom)",
      labelNames: ["runtime", "cause"],
      registers,
    });
    this.startLatency = new Histogram({
      name: "taskrouter_exec_start_seconds",
      help: "Time from a TaskExecStart reaching the task manager to the exec's process running",
      labelNames: ["runtime"],
      buckets: exponentialBuckets(0.0005, 2, 15), // 0.5 ms .. ~8 s
      registers,
    });
    new Gauge({
      name: "taskrouter_execs_live",
      help: "Execs whose process is running",
      registers,
      collect() {
        this.set(live.execs());
      },
    });
    new Gauge({
      name: "taskrouter_tasks_live",
      help: "Tasks this router holds",
      registers,
      collect() {
        this.set(live.tasks());
      },
    });
    this.outBytes = new Counter({
      name: "taskrouter_output_bytes_total",
      help: "Bytes of exec output sent to readers (out), by stream",
      labelNames: ["stream"],
      registers,
    });
    this.inBytes = new Counter({
      name: "taskrouter_stdin_bytes_total",
      help: "Bytes of stdin data received for execs (in)",
      registers,
    });
    this.throughput = new Histogram({
      name: "taskrouter_output_stream_bytes_per_second",
      help: "Throughput of each output read that delivered data, from its first chunk to its end",
      labelNames: ["stream"],
      buckets: exponentialBuckets(1024, 4, 12), // 1 KiB/s .. 4 GiB/s
      registers,
    });
    this.imageOps = new Histogram({
      name: "taskrouter_image_operation_seconds",
      help: "Duration of snapshots, mounts and unmounts, by operation and outcome (ok, error)",
      labelNames: ["op", "outcome"],
      buckets: exponentialBuckets(0.001, 4, 10), // 1 ms .. ~4 min
      registers,
    });
    this.registryBytesTotal = new Counter({
      name: "taskrouter_registry_bytes_total",
      help: "Bytes of blobs uploaded to (push) or downloaded from (pull) the registry; blobs skipped are not counted",
      labelNames: ["direction"],
      registers,
    });
    this.transfers = new Counter({
      name: "taskrouter_registry_transfers_total",
      help: "Image pushes and pulls that ended, by direction and result (ok, error)",
      labelNames: ["direction", "result"],
      registers,
    });
    this.transferSeconds = new Histogram({
      name: "taskrouter_registry_transfer_seconds",
      help: "Duration of each image push or pull, by direction",
      labelNames: ["direction"],
      buckets: exponentialBuckets(0.01, 4, 9), // 10 ms .. ~11 min
      registers,
    });
    this.rpcs = new Counter({
      name: "taskrouter_rpcs_total",
      help: "gRPC calls that ended, by method path and status code",
      labelNames: ["method", "code"],
      registers,
    });
  }

  execStarted(runtime: string, seconds: number): void {
    this.started.inc({ runtime });
    this.startLatency.observe({ runtime }, seconds);
  }

  execFinished(runtime: string, cause: TerminationCause): void {
    this.finished.inc({ runtime, cause });
  }

  outputRead(stream: StreamName, bytes: number): void {
    this.outBytes.inc({ stream }, bytes);
  }

  outputStreamEnded(stream: StreamName, bytes: number, seconds: number): void {
    // One chunk takes no measurable time: its rate is not a throughput.
    if (seconds > 0) this.throughput.observe({ stream }, bytes / seconds);
  }

  stdinWritten(bytes: number): void {
    this.inBytes.inc(bytes);
  }

  imageOp(op: ImageOp, seconds: number, ok: boolean): void {
    this.imageOps.observe({ op, outcome: ok ? "ok" : "error" }, seconds);
  }

  registryBytes(direction: TransferDirection, bytes: number): void {
    this.registryBytesTotal.inc({ direction }, bytes);
  }

  registryTransfer(direction: TransferDirection, seconds: number, ok: boolean): void {
    this.transfers.inc({ direction, result: ok ? "ok" : "error" });
    this.transferSeconds.observe({ direction }, seconds);
  }

  rpc(method: string, code: number): void {
    this.rpcs.inc({ method, code: CODE_NAMES.get(code) ?? String(code) });
  }
}
