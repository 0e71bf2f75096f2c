// Tests src/vm/probe.ts against the real QEMU and appliance kernel: the probe guest boots under TCG, a broken kernel
// is reported as a failure (not a hang), and the verdict is remembered per host.
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { bootKernel } from "../../src/vm/machine.js";
import { chooseAccel, probeAccel } from "../../src/vm/probe.js";
import { prepareVm, tempDir } from "./helpers.js";

const vm = await prepareVm();
const kernel = bootKernel(vm.appliance);

t.test("the probe guest prints its banner under TCG", async (t) => {
  const t0 = Date.now();
  const r = await probeAccel(vm.qemu.binary, kernel, "tcg", 120_000);
  t.same(r, { ok: true, detail: "the probe guest booted" });
  t.comment(`TCG probe: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});

t.test("a kernel QEMU cannot load fails fast with QEMU's reason", async (t) => {
  const tmp = await tempDir("vmdib-test-probe-");
  t.teardown(tmp.done);
  const bad = join(tmp.path, "not-a-kernel");
  await writeFile(bad, "nonsense");
  const r = await probeAccel(vm.qemu.binary, bad, "tcg", 60_000);
  t.equal(r.ok, false);
  t.match(r.detail, /QEMU failed before the guest booted/);
});

t.test("the verdict is remembered in the cache; --accel skips it", async (t) => {
  const cache = await tempDir("vmdib-test-cache-");
  t.teardown(cache.done);
  const env = { ...process.env, VMDIB_CACHE_DIR: cache.path };
  const first = await chooseAccel({ qemu: vm.qemu, kernel, env });
  t.equal(first.cached, false);
  t.comment(`verdict: ${first.accel} (${first.reason})`);
  t.equal((await readdir(join(cache.path, "accel"))).length, 1);
  const second = await chooseAccel({ qemu: vm.qemu, kernel, env });
  t.same(second, { ...first, cached: true });
  t.same(await chooseAccel({ qemu: vm.qemu, kernel, env, override: "tcg" }), {
    accel: "tcg",
    reason: "--accel tcg",
    cached: false,
  });
});
