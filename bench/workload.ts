// What a benchmark is made of: workloads (one measured run → named timings), groups of them that share a table in
// BENCHMARKS.md, and the interleaved runner (A B C A B C …) that keeps a shared, busy machine fair to every entry.

/** Told to a workload when it cannot run here: the row says "not measured" and why (and how to fix it). */
export class NotMeasured extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "NotMeasured";
  }
}

/** One run's timings (metric name → milliseconds) and any facts learnt on the way. */
export interface RunResult {
  readonly ms: Readonly<Record<string, number>>;
  readonly notes?: readonly string[];
}

export interface Workload {
  /** Unique across all groups, e.g. "vmdib-warm"; selectable with BENCH=. */
  readonly name: string;
  /** One line for the table's legend: what exactly is measured. */
  readonly describe: string;
  /** Once, before the rounds (not timed). Throw NotMeasured when the workload cannot run on this host. */
  prepare?(): Promise<void>;
  /** One timed run; `signal` aborts when the bench is interrupted (stop what was started, then reject). */
  run(round: number, signal?: AbortSignal): Promise<RunResult>;
  /** Once, after the rounds, whatever happened. */
  cleanup?(): Promise<void>;
}

/** One metric of one workload. */
export interface MetricRef {
  readonly workload: string;
  readonly metric: string;
}

/** A row of a group's table: one metric of one workload, optionally as a ratio to another row (the reference). */
export interface Row extends MetricRef {
  readonly label: string;
  readonly ref?: MetricRef;
}

/** "numerator / denominator ≤ max", checked on the medians of two of the group's rows. */
export interface Goal {
  readonly text: string;
  readonly numerator: MetricRef;
  readonly denominator: MetricRef;
  readonly max: number;
}

/** Everything a group measured, ready to render (see report.ts). */
export interface GroupResult {
  readonly group: string;
  readonly title: string;
  readonly rounds: number;
  readonly rows: readonly Row[];
  readonly goals: readonly Goal[];
  /** workload → metric → samples (ms). */
  readonly samples: Readonly<Record<string, Readonly<Record<string, readonly number[]>>>>;
  /** workload → why it was not measured (and the hint). */
  readonly skipped: Readonly<Record<string, string>>;
  readonly describe: Readonly<Record<string, string>>;
  /** Extra tables (sizes, …) and free lines the group adds below its timings. */
  readonly facts: readonly FactTable[];
  readonly notes: readonly string[];
  /** Goals that are not a ratio of two rows (a memory or size limit): whole lines, "met"/"not met" included. */
  readonly verdicts?: readonly string[];
}

export interface FactTable {
  readonly title: string;
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

export interface Group {
  readonly name: string;
  readonly title: string;
  /** Build the workloads (effects happen in prepare/run, not here). */
  workloads(): Workload[];
  readonly rows: readonly Row[];
  readonly goals: readonly Goal[];
  /** Rounds when the run does not say (ROUNDS / --rounds); default DEFAULT_ROUNDS (args.ts). Long builds: 1. */
  readonly defaultRounds?: number;
  /** Facts gathered after the rounds (sizes of what was built, …) and verdicts on goals that are not ratios. */
  facts?(): Promise<GroupFacts>;
}

export interface GroupFacts {
  readonly tables: FactTable[];
  readonly notes: string[];
  readonly verdicts?: string[];
}

/** The order of runs: every round visits each workload once, in the same order (pure). */
export function schedule(names: readonly string[], rounds: number): { round: number; name: string }[] {
  const out: { round: number; name: string }[] = [];
  for (let round = 1; round <= rounds; round++) for (const name of names) out.push({ round, name });
  return out;
}

export interface RunGroupOptions {
  readonly rounds: number;
  /** Only these workloads of the group (undefined: all); see selectWorkloads in args.ts. */
  readonly only?: ReadonlySet<string>;
  readonly log: (line: string) => void;
  /** The bench was interrupted: the current run is told, later ones are not started, the result keeps the rest. */
  readonly signal?: AbortSignal;
}

const INTERRUPTED = "the bench was interrupted (SIGINT/SIGTERM) before it ran";
const STOPPED = (round: number) =>
  `The bench was interrupted in round ${round}: the rows show what was measured before that.`;

/**
 * Prepare the group's workloads, run them interleaved for `rounds` rounds, clean up. A workload that fails to
 * prepare is recorded as not measured; one that fails a run is dropped from the remaining rounds with the reason.
 * An interrupted bench (opts.signal) keeps what was measured: the running workload and those after it are marked.
 */
export async function runGroup(group: Group, opts: RunGroupOptions): Promise<GroupResult> {
  const all = group.workloads();
  const chosen = all.filter((w) => !opts.only || opts.only.has(w.name));
  const samples: Record<string, Record<string, number[]>> = {};
  const skipped: Record<string, string> = {};
  const notes: string[] = [];
  const ready: Workload[] = [];
  const prepared: Workload[] = [];
  let facts: GroupFacts = { tables: [], notes: [] };
  let stoppedIn: number | undefined;
  try {
    for (const w of chosen) {
      if (opts.signal?.aborted) {
        skipped[w.name] = INTERRUPTED;
        continue;
      }
      opts.log(`[${group.name}] preparing ${w.name}`);
      try {
        await w.prepare?.();
        ready.push(w);
      } catch (err) {
        skipped[w.name] = reasonOf(err);
        opts.log(`[${group.name}] ${w.name} not measured: ${skipped[w.name]}`);
      }
      prepared.push(w);
    }
    const byName = new Map(ready.map((w) => [w.name, w]));
    for (const { round, name } of schedule(
      ready.map((w) => w.name),
      opts.rounds,
    )) {
      const w = byName.get(name);
      if (!w || skipped[name]) continue;
      if (opts.signal?.aborted) {
        // A workload measured in earlier rounds keeps its samples; the note says the later rounds are missing.
        if (!samples[name]) skipped[name] = INTERRUPTED;
        stoppedIn ??= round;
        continue;
      }
      opts.log(`[${group.name}] round ${round}/${opts.rounds}: ${name}`);
      try {
        const r = await w.run(round, opts.signal);
        const per = samples[name] ?? {};
        samples[name] = per;
        for (const [metric, ms] of Object.entries(r.ms)) per[metric] = [...(per[metric] ?? []), ms];
        for (const n of r.notes ?? []) if (!notes.includes(n)) notes.push(n);
        opts.log(
          `[${group.name}]   ${Object.entries(r.ms)
            .map(([k, v]) => `${k} ${(v / 1000).toFixed(2)} s`)
            .join(", ")}`,
        );
      } catch (err) {
        if (opts.signal?.aborted) {
          if (!samples[name]) skipped[name] = "interrupted: the bench was stopped (SIGINT/SIGTERM) while it ran";
          stoppedIn ??= round;
          continue;
        }
        skipped[name] = `failed in round ${round}: ${reasonOf(err)}`;
        opts.log(`[${group.name}] ${name} ${skipped[name]}`);
      }
    }
    if (stoppedIn !== undefined) notes.push(STOPPED(stoppedIn));
    // Before cleanup: facts may look at what the workloads made (caches, appliances).
    facts = group.facts ? await group.facts() : facts;
  } finally {
    for (const w of prepared.reverse()) {
      await w.cleanup?.().catch((err: unknown) => opts.log(`[${group.name}] cleanup of ${w.name}: ${reasonOf(err)}`));
    }
  }
  return {
    group: group.name,
    title: group.title,
    rounds: opts.rounds,
    rows: group.rows,
    goals: group.goals,
    samples,
    skipped,
    describe: Object.fromEntries(all.map((w) => [w.name, w.describe])),
    facts: facts.tables,
    notes: [...notes, ...facts.notes],
    ...(facts.verdicts?.length ? { verdicts: facts.verdicts } : {}),
  };
}

function reasonOf(err: unknown): string {
  if (err instanceof NotMeasured) return err.hint ? `${err.message} (${err.hint})` : err.message;
  const e = err as { message?: string; hint?: string };
  const msg = e?.message ?? String(err);
  return e?.hint ? `${msg} (${e.hint})` : msg;
}
