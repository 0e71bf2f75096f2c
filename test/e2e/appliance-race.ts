// Two `vmdib run` started at once with an empty appliance cache: one builds the appliance, the other waits on the
// per-key lock and uses it; both commands run; the cached appliance verifies. A private VMDIB_CACHE_DIR holds
// hard links to the user's verified index and .debs, so the appliance is built --offline (no download).
import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { execa } from "execa";
import t from "tap";
import { cacheDir, PACKAGE_ROOT } from "../../src/paths.js";
import { checkAppliance, ensureAppliance } from "../../src/vm/appliance/index.js";

const run = promisify(execFile);
const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");

t.test("two runs racing to build the appliance: one builds, the other waits for it, both run", async (t) => {
  // The user's appliance inputs (index, .debs, kernels) exist once this returns.
  await ensureAppliance({ env: process.env, offline: false });
  const real = cacheDir(process.env);
  const cache = await mkdtemp(join(tmpdir(), "vmdib-test-race-cache-"));
  const tmp = await mkdtemp(join(tmpdir(), "vmdib-test-race-tmp-"));
  t.teardown(async () => {
    await rm(cache, { recursive: true, force: true });
    await rm(tmp, { recursive: true, force: true });
  });
  for (const d of ["index", "debs", "kernels", "accel"]) {
    // Hard links: only read, and replaced by rename, never in place. The accelerator verdict spares a probe boot.
    await run("cp", ["-al", join(real, d), join(cache, d)]).catch(() => {});
  }
  const env = { VMDIB_CACHE_DIR: cache, TMPDIR: tmp };
  const start = (word: string) =>
    execa(VMDIB, ["run", "-v", "--offline", "--", "echo", word], { env, reject: false, all: true });
  const t0 = Date.now();
  const [a, b] = await Promise.all([start("first"), start("second")]);
  t.comment(`both done after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  t.equal(a.exitCode, 0, "the first run succeeds");
  t.equal(b.exitCode, 0, "the second run succeeds");
  t.match(a.stdout, /^first$/m);
  t.match(b.stdout, /^second$/m);
  const built = [a, b].filter((r) => /appliance \S+ \(built\)/.test(r.stderr));
  const waited = [a, b].filter((r) => /waiting for another build of \S+/.test(r.stderr));
  t.equal(built.length, 1, "exactly one built the appliance");
  t.equal(waited.length, 1, "the other waited on the lock");
  t.match(waited[0]?.stderr ?? "", /appliance \S+ \(cached\)/, "and then used the one built");

  const dirs = (await readdir(join(cache, "appliance"))).filter((n) => !n.startsWith("."));
  t.equal(dirs.length, 1, "one appliance in the cache");
  t.ok((await checkAppliance(join(cache, "appliance", dirs[0] ?? "missing"))).manifest, "and it verifies");
  const leftovers = (await readdir(join(cache, "appliance"))).filter(
    (n) => n.startsWith(".tmp-") || n.startsWith(".lock-"),
  );
  t.same(leftovers, [], "no lock or half-built directory left");
  t.same(await readdir(join(tmp, `vmdib-${process.getuid?.() ?? 0}`)).catch(() => []), [], "no run directory left");
});
