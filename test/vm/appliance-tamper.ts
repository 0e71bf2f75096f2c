// A damaged cached appliance (src/vm/appliance/index.ts) is found by its hash and rebuilt: a copy of the user's
// cache with the initramfs truncated, then ensureAppliance --offline from the cached .debs. The real cache is not
// touched (its .debs and index are hard-linked, the appliance directory is copied).
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import t from "tap";
import { cacheDir } from "../../src/paths.js";
import { sha256File } from "../../src/vm/appliance/archive.js";
import { type ApplianceEvent, checkAppliance, ensureAppliance } from "../../src/vm/appliance/index.js";

const run = promisify(execFile);

t.test("a truncated initramfs in the cache: detected by its hash, rebuilt offline, the result verifies", async (t) => {
  // The user's current appliance (built by earlier tests, or now).
  const current = await ensureAppliance({ env: process.env, offline: false });
  const real = cacheDir(process.env);
  const copy = await mkdtemp(join(tmpdir(), "vmdib-test-cache-"));
  t.teardown(() => rm(copy, { recursive: true, force: true }));
  for (const d of ["index", "debs", "kernels"]) {
    // Hard links: ensureAppliance only reads these, and replaces files by rename, never in place.
    await run("cp", ["-al", join(real, d), join(copy, d)]).catch(() => {});
  }
  await mkdir(join(copy, "appliance"), { recursive: true });
  await run("cp", ["-a", current.dir, join(copy, "appliance", basename(current.dir))]);
  await run("cp", ["-a", join(real, "appliance", ".resolved"), join(copy, "appliance", ".resolved")]);
  const env = { ...process.env, VMDIB_CACHE_DIR: copy };

  const damaged = join(copy, "appliance", current.key, current.manifest.initrd.file);
  const size = (await stat(damaged)).size;
  await truncate(damaged, Math.floor(size / 2));
  const check = await checkAppliance(join(copy, "appliance", current.key));
  t.match(check, { problem: /initrd/ }, "the damage is seen");

  const events: ApplianceEvent[] = [];
  const t0 = Date.now();
  const rebuilt = await ensureAppliance({ env, offline: true, onEvent: (e) => events.push(e) });
  t.comment(`rebuilt offline in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t.ok(
    events.some((e) => e.type === "warning" && /damaged .*rebuilding/.test(e.message)),
    "the user is told why it is rebuilt",
  );
  t.equal(rebuilt.key, current.key, "same inputs, same key");
  t.notOk(rebuilt.reused, "built again, not taken from the damaged cache");
  t.equal((await stat(rebuilt.initrd)).size, size, "full size again");
  t.equal(await sha256File(rebuilt.initrd), rebuilt.manifest.initrd.sha256, "matches its manifest");
  t.ok((await checkAppliance(current.dir)).manifest, "the real cache is intact");
});
