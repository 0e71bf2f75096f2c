// `make bench` (node dist/bench/run.js): run the selected benchmark groups interleaved and write BENCHMARKS.md.
// The only module of bench/ that prints; the groups are a table below — a new workload is an entry in a group.
import { readFile, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg, release, totalmem, userInfo } from "node:os";
import { join } from "node:path";
import { VmdibError } from "../src/errors.js";
import { PACKAGE_ROOT } from "../src/paths.js";
import { BENCH_HELP, DEFAULT_ROUNDS, parseBenchArgs, selectWorkloads } from "./args.js";
import { w1Group, w2Group } from "./builds.js";
import { runTimed } from "./proc.js";
import { readyGroup, sharedVm } from "./ready.js";
import { goalLine, mergeReport, type RunInfo, renderSection } from "./report.js";
import { type Group, runGroup } from "./workload.js";

/** The commit measured: BENCH_COMMIT (a copy without .git), else git's HEAD and whether the tree had changes. */
async function commitOf(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (env.BENCH_COMMIT) return env.BENCH_COMMIT;
  const git = (args: string[]) => runTimed("git", ["-C", PACKAGE_ROOT, ...args], { env, timeoutMs: 30_000 });
  const head = await git(["rev-parse", "--short", "HEAD"]).catch(() => undefined);
  if (head?.code !== 0 || !head.lines[0]) return undefined;
  const dirty = await git(["status", "--porcelain", "--untracked-files=no"]).catch(() => undefined);
  return `commit ${head.lines[0].text}${dirty?.lines.length ? " + local changes" : ""}`;
}

function machineLine(): string {
  const model = cpus()[0]?.model?.replace(/\s+/g, " ").trim() ?? "unknown CPU";
  return `${availableParallelism()} CPUs (${model}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB memory, Linux ${release()}, Node ${process.version}`;
}

/** How this run was started, as a reader would repeat it. */
function commandLine(argv: readonly string[], env: NodeJS.ProcessEnv): string {
  if (env.MAKELEVEL) {
    const vars = ["BENCH", "ROUNDS", "BENCH_COLD_NETWORK"].filter((k) => env[k]).map((k) => ` ${k}=${env[k]}`);
    return `make bench${vars.join("")}`;
  }
  return ["node dist/bench/run.js", ...argv].join(" ");
}

async function main(): Promise<number> {
  const env = process.env;
  const argv = process.argv.slice(2);
  const opts = parseBenchArgs(argv, env);
  if (opts.help) {
    process.stdout.write(BENCH_HELP);
    return 0;
  }
  const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
  const shared = sharedVm(env, log);

  // Every group, in the order of BENCHMARKS.md.
  const GROUPS: Group[] = [
    readyGroup({ env, coldNetwork: opts.coldNetwork, log, shared }),
    w1Group({ env, log, shared }),
    w2Group({ env, log, shared }),
  ];

  const selection = selectWorkloads(
    GROUPS.map((g) => ({ name: g.name, workloads: g.workloads().map((w) => w.name) })),
    opts.only,
  );
  const date = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const loadStart = loadavg();
  const commit = await commitOf(env);
  log(`load average at start: ${loadStart.map((x) => x.toFixed(2)).join(" ")}`);

  // Ctrl-C or a kill stops the running tool and the rounds after it, and still writes what was measured; groups
  // that did not start keep their old sections. A second signal ends the bench at once.
  const interrupt = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupt.signal.aborted) process.exit(130);
    log(`${sig}: stopping the current run; the report keeps what was measured (again to quit at once)`);
    interrupt.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const results = [];
  for (const sel of selection) {
    if (interrupt.signal.aborted) break;
    const group = GROUPS.find((g) => g.name === sel.group) as Group;
    const rounds = opts.rounds ?? group.defaultRounds ?? DEFAULT_ROUNDS;
    log(`group ${group.name}: ${rounds} round${rounds === 1 ? "" : "s"}`);
    results.push(await runGroup(group, { rounds, only: new Set(sel.workloads), log, signal: interrupt.signal }));
  }

  const vm = await shared().catch(() => undefined);
  const info: RunInfo = {
    date,
    command: commandLine(argv, env),
    user: userInfo().username,
    machine: machineLine(),
    qemu: vm?.qemu.version ?? "unknown",
    accel: vm ? `${vm.accel.accel} (${vm.accel.reason})` : "unknown",
    loadStart,
    loadEnd: loadavg(),
    ...(commit ? { commit } : {}),
  };
  const out = opts.out ?? join(PACKAGE_ROOT, "BENCHMARKS.md");
  const old = await readFile(out, "utf8").catch(() => undefined);
  const fresh = new Map(results.map((r) => [r.group, renderSection(r, info)]));
  await writeFile(
    out,
    mergeReport(
      old,
      fresh,
      GROUPS.map((g) => g.name),
    ),
  );
  log(`wrote ${out}`);
  for (const r of results) {
    for (const g of r.goals) process.stdout.write(`${r.group}: ${goalLine(r, g).replace(/^- /, "")}\n`);
    for (const v of r.verdicts ?? []) process.stdout.write(`${r.group}: Goal: ${v}\n`);
    for (const [w, why] of Object.entries(r.skipped)) process.stdout.write(`${r.group}: ${w} not measured: ${why}\n`);
  }
  return interrupt.signal.aborted ? 130 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = err as VmdibError;
    process.stderr.write(`bench: ${e?.message ?? String(err)}\n${e?.hint ? `  hint: ${e.hint}\n` : ""}`);
    process.exitCode = err instanceof VmdibError ? err.exitCode : 1;
  },
);
