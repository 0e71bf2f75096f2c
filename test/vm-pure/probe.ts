// Tests src/vm/probe.ts: the accelerator decision (effects injected), --accel parsing, the missing-QEMU hint.
import t from "tap";
import { UsageError, VmdibError } from "../../src/errors.js";
import { decideAccel, findQemu, parseAccel } from "../../src/vm/probe.js";

const never = async () => {
  throw new Error("must not probe");
};

t.test("Linux with a working KVM uses it", async (t) => {
  const d = await decideAccel(
    {
      platform: "linux",
      hostArch: "x64",
      kvmAccessible: async () => true,
      probe: async () => ({ ok: true, detail: "" }),
    },
    10,
  );
  t.same(d, { accel: "kvm", reason: "KVM boots guests" });
});

t.test("KVM that opens but hangs falls back to TCG and says so", async (t) => {
  const d = await decideAccel(
    {
      platform: "linux",
      hostArch: "x64",
      kvmAccessible: async () => true,
      probe: async () => ({ ok: false, detail: "the probe guest printed nothing for 10 s" }),
    },
    10,
  );
  t.equal(d.accel, "tcg");
  t.equal(d.reason, "KVM present but the probe guest hung for 10 s; using TCG");
});

t.test("no /dev/kvm, or no access to it: TCG without probing", async (t) => {
  const a = await decideAccel(
    { platform: "linux", hostArch: "x64", kvmAccessible: async () => "missing", probe: never },
    10,
  );
  t.equal(a.accel, "tcg");
  t.match(a.reason, /no \/dev\/kvm/);
  const b = await decideAccel(
    { platform: "linux", hostArch: "x64", kvmAccessible: async () => false, probe: never },
    10,
  );
  t.match(b.reason, /group kvm/);
});

t.test("macOS: HVF on Intel, TCG on Apple silicon (an amd64 guest cannot use HVF there)", async (t) => {
  const intel = await decideAccel(
    {
      platform: "darwin",
      hostArch: "x64",
      kvmAccessible: never,
      probe: async (a) => ({ ok: a === "hvf", detail: "" }),
    },
    10,
  );
  t.equal(intel.accel, "hvf");
  const arm = await decideAccel({ platform: "darwin", hostArch: "arm64", kvmAccessible: never, probe: never }, 10);
  t.equal(arm.accel, "tcg");
});

t.test("--accel values", async (t) => {
  t.equal(parseAccel("tcg"), "tcg");
  t.throws(() => parseAccel("xen"), UsageError);
  try {
    parseAccel("KVM");
  } catch (err) {
    t.equal((err as UsageError).exitCode, 2);
    t.match((err as UsageError).hint, /kvm, hvf, tcg/);
  }
});

t.test("no QEMU on PATH: an error with install hints", async (t) => {
  const err = await findQemu({ PATH: "/nonexistent" }, "linux").catch((e: unknown) => e);
  t.ok(err instanceof VmdibError);
  t.match((err as VmdibError).message, /qemu-system-x86_64 not found/);
  t.match((err as VmdibError).hint, /apt-get install qemu-system-x86/);
  t.match((err as VmdibError).hint, /brew install qemu/);
  const mac = (await findQemu({ PATH: "" }, "darwin").catch((e: unknown) => e)) as VmdibError;
  t.match(mac.hint, /brew install qemu/);
});
