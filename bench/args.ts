// Bench options (pure): argv and environment (`make bench BENCH=ready ROUNDS=5`) → what to run, how often, where.
import { UsageError } from "../src/errors.js";

export interface BenchOptions {
  /** Group or workload names; undefined: everything. */
  readonly only: readonly string[] | undefined;
  /** Rounds of every workload; undefined: each group's own default (DEFAULT_ROUNDS, 1 for the image builds). */
  readonly rounds: number | undefined;
  /** Output file; undefined: BENCHMARKS.md at the repository root. */
  readonly out: string | undefined;
  /** Cold runs download the .debs too (default: they are seeded from the user's cache, see the report). */
  readonly coldNetwork: boolean;
  readonly help: boolean;
}

export const DEFAULT_ROUNDS = 3;

export const BENCH_HELP = `usage: node dist/bench/run.js [--only NAME[,NAME...]] [--rounds N] [--out FILE] [--cold-network]
       make bench [BENCH=NAME[,NAME...]] [ROUNDS=N]

Runs the benchmark workloads interleaved and writes BENCHMARKS.md (a partial run replaces only its sections).
  --only NAME     a group (e.g. ready) or a single workload (e.g. vmdib-warm); env BENCH
  --rounds N      rounds of every workload (default ${DEFAULT_ROUNDS}; 1 for the image builds w1, w2); env ROUNDS
  --out FILE      write here instead of BENCHMARKS.md at the repository root
  --cold-network  cold runs download their .debs from the mirror instead of a seeded copy; env BENCH_COLD_NETWORK=1
`;

function splitNames(v: string | undefined): string[] | undefined {
  const names = (v ?? "")
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
  return names.length ? names : undefined;
}

function positive(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n <= 0) {
    throw new UsageError(`${flag} needs a positive whole number, not '${v ?? ""}'`);
  }
  return n;
}

/** argv wins over the environment; empty environment values count as unset (make passes BENCH= through). */
export function parseBenchArgs(argv: readonly string[], env: NodeJS.ProcessEnv): BenchOptions {
  let only = splitNames(env.BENCH);
  let rounds: number | undefined = env.ROUNDS ? positive("ROUNDS", env.ROUNDS) : undefined;
  let out: string | undefined;
  let coldNetwork = env.BENCH_COLD_NETWORK === "1";
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      i++;
      if (i >= argv.length) throw new UsageError(`${flag} needs a value`);
      return argv[i];
    };
    switch (flag) {
      case "--only":
        only = splitNames(value());
        break;
      case "--rounds":
        rounds = positive("--rounds", value());
        break;
      case "--out":
        out = value();
        break;
      case "--cold-network":
        coldNetwork = true;
        break;
      case "-h":
      case "--help":
        help = true;
        break;
      default:
        throw new UsageError(`unknown bench option '${a}'`, { hint: "see --help" });
    }
  }
  return { only, rounds, out, coldNetwork, help };
}

/** Which groups run, and which of their workloads; unknown names are a usage error listing the known ones. */
export function selectWorkloads(
  groups: readonly { readonly name: string; readonly workloads: readonly string[] }[],
  only: readonly string[] | undefined,
): { group: string; workloads: string[] }[] {
  if (!only) return groups.map((g) => ({ group: g.name, workloads: [...g.workloads] }));
  const known = groups.flatMap((g) => [g.name, ...g.workloads]);
  const unknown = only.filter((n) => !known.includes(n));
  if (unknown.length) {
    throw new UsageError(`unknown benchmark ${unknown.map((n) => `'${n}'`).join(", ")}`, {
      hint: `known groups and workloads: ${known.join(", ")}`,
    });
  }
  const out: { group: string; workloads: string[] }[] = [];
  for (const g of groups) {
    const workloads = only.includes(g.name) ? [...g.workloads] : g.workloads.filter((w) => only.includes(w));
    if (workloads.length) out.push({ group: g.name, workloads });
  }
  return out;
}
