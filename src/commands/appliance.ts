// `vmdib appliance build|info`: assemble (or reuse) the cached helper-VM appliance, and show what is cached.
import { parseArgs } from "node:util";
import { UsageError } from "../errors.js";
import { createDownloadMeter } from "../progress.js";
import { type ApplianceEvent, ensureAppliance, listAppliances } from "../vm/appliance/index.js";
import type { Command, CommandContext } from "./context.js";

const HELP = `usage: vmdib appliance build [--offline] [--no-cache] [--init FILE]
       vmdib appliance info [--verbose]

build   assemble the helper VM's kernel and initramfs from Debian packages (cached by content)
          --offline    use only the cached package index and .debs
          --no-cache   rebuild even if an identical appliance is cached
          --init FILE  use FILE as the appliance's /init instead of guest/init (development)
info    list cached appliances: key, kernel, package count, sizes, creation date
          --verbose    also every package and version
`;

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** One human line per event, or nothing (per-package download noise is summarised). */
export function formatEvent(e: ApplianceEvent): string | undefined {
  const ms = (n: number | undefined) => (n === undefined ? "" : ` (${(n / 1000).toFixed(1)} s)`);
  switch (e.type) {
    case "index":
      return `index: ${e.suite} from ${e.source === "network" ? "the mirror" : "the cache"}, signed ${e.date}`;
    case "downloads":
      return e.count
        ? `downloading ${e.count} packages (${mb(e.bytes)}); ${e.cached} already cached`
        : `all ${e.cached} packages are in the cache`;
    case "download-start":
      return undefined;
    case "download-done":
      return e.bytes > 5e6 ? `  fetched ${e.name} (${mb(e.bytes)})${ms(e.ms)}` : undefined;
    case "step":
      return `${e.message}${ms(e.ms)}`;
    case "cache-hit":
      return `reusing cached appliance ${e.key}`;
    case "warning":
      return `warning: ${e.message}`;
  }
}

async function build(ctx: CommandContext, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { offline: { type: "boolean" }, "no-cache": { type: "boolean" }, init: { type: "string" } },
    strict: true,
  });
  const t0 = Date.now();
  // Downloads: a bar on a terminal, a line every few seconds otherwise.
  const meter = createDownloadMeter(ctx.stderr);
  const a = await ensureAppliance({
    env: ctx.env,
    offline: values.offline ?? false,
    noCache: values["no-cache"] ?? false,
    refresh: true,
    signal: ctx.signal,
    onEvent: (e) => {
      if (e.type === "download-progress") return meter.progress(e);
      const line = formatEvent(e);
      if (line) meter.line(line);
    },
    ...(values.init ? { initPath: values.init } : {}),
  }).finally(() => meter.close()); // a failed download's bar must not stay in front of the error message
  const m = a.manifest;
  ctx.stdout.write(
    [
      `appliance ${a.key} ${a.reused ? "(cached)" : "(built)"} in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      `  kernel  ${a.kernel} (${m.kernel.release}, ${mb(m.kernel.size)})`,
      ...(a.vmlinux ? [`  vmlinux ${a.vmlinux} (uncompressed, for PVH direct boot)`] : []),
      `  initrd  ${a.initrd} (${mb(m.initrd.size)}, ${m.packages.length} packages, ${m.modules.length} modules)`,
      "",
    ].join("\n"),
  );
  return 0;
}

async function info(ctx: CommandContext, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { verbose: { type: "boolean", short: "v" } }, strict: true });
  const list = await listAppliances(ctx.env);
  if (!list.length) {
    ctx.stdout.write("no cached appliance; run `vmdib appliance build`\n");
    return 0;
  }
  for (const a of list) {
    const m = a.manifest;
    if (!m) {
      ctx.stdout.write(`${a.key}  damaged: ${a.problem}  (${a.dir})\n`);
      continue;
    }
    ctx.stdout.write(
      [
        `${a.key}  created ${m.createdAt}`,
        `  dir       ${a.dir}`,
        `  suite     ${m.suite}/${m.arch}, index signed ${m.indexDate}`,
        `  kernel    ${m.kernel.package} ${m.kernel.version} (${m.kernel.release}), ${mb(m.kernel.size)}` +
          (m.vmlinux ? `; vmlinux ${mb(m.vmlinux.size)}` : ""),
        `  initrd    ${mb(m.initrd.size)} (${m.initrd.compression})`,
        `  packages  ${m.packages.length}, modules ${m.modules.length}`,
        "",
      ].join("\n"),
    );
    if (values.verbose) {
      const width = Math.max(...m.packages.map((p) => p.name.length + p.version.length + 1));
      for (const p of m.packages) {
        const size = p.initrdBytes === undefined ? "" : `  ${mb(p.initrdBytes).padStart(9)} in initrd`;
        ctx.stdout.write(`    ${`${p.name} ${p.version}`.padEnd(width)}${size}\n`);
      }
      ctx.stdout.write(`    modules: ${m.modules.join(" ")}\n`);
    }
  }
  return 0;
}

export const run: Command = async (ctx) => {
  const [sub, ...rest] = ctx.args;
  if (sub === "build") return await build(ctx, rest);
  if (sub === "info") return await info(ctx, rest);
  if (sub === undefined || sub === "-h" || sub === "--help" || sub === "help") {
    ctx.stdout.write(HELP);
    return sub === undefined ? 2 : 0;
  }
  throw new UsageError(`unknown appliance subcommand '${sub}'`, {
    hint: "use `vmdib appliance build` or `vmdib appliance info`",
  });
};
