// Tests for src/commands/doctor.ts: the verdicts from facts (pure), and the real command against a mirror that
// answers 404 and an empty cache.
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { type Check, diagnose, type Facts, renderChecks } from "../../src/commands/doctor.js";
import { vmdib } from "../helpers/cli.js";

const GOOD: Facts = {
  platform: "linux",
  node: "v20.11.0",
  qemu: { binary: "/usr/bin/qemu-system-x86_64", version: "QEMU emulator version 7.2.0" },
  qemuImg: { version: "qemu-img version 7.2.0" },
  ninep: true,
  accel: { accel: "kvm", reason: "KVM boots a guest" },
  space: [
    { what: "cache", path: "/home/u/.cache/vmdib", freeBytes: 50 * 1024 ** 3 },
    { what: "work", path: "/tmp", freeBytes: 50 * 1024 ** 3 },
  ],
  mirror: { url: "http://mirror.example/debian", release: "bookworm", status: 200 },
  appliance: { key: "abc", createdAt: "2026-11-29T00:00:00Z", bytes: 190e6, packages: 197 },
};
const byName = (checks: Check[], name: string) => checks.find((c) => c.name === name);

t.test("everything in place: all ok, a build can run", async (t) => {
  const checks = diagnose(GOOD);
  t.same(
    checks.filter((c) => c.status !== "ok"),
    [],
  );
  t.match(renderChecks(checks), /a build can run\n$/);
});

t.test("each missing piece is named with the command that fixes it", async (t) => {
  const noQemu = diagnose({ ...GOOD, qemu: { error: "qemu-system-x86_64 not found on PATH" }, ninep: undefined });
  t.equal(byName(noQemu, "qemu")?.status, "fail");
  t.equal(byName(noQemu, "qemu")?.fix, "sudo apt-get install qemu-system-x86");
  const mac = diagnose({ ...GOOD, platform: "darwin", qemuImg: { error: "qemu-img not found on PATH" } });
  t.equal(byName(mac, "qemu-img")?.fix, "brew install qemu");
  t.equal(byName(diagnose({ ...GOOD, ninep: false }), "9p")?.status, "fail");
  t.equal(byName(diagnose({ ...GOOD, node: "v18.19.0" }), "node")?.status, "fail");

  const tcg = byName(
    diagnose({ ...GOOD, accel: { accel: "tcg", reason: "/dev/kvm is not accessible to this user; using TCG" } }),
    "accelerator",
  );
  t.equal(tcg?.status, "warn", "TCG works, slowly");
  t.match(tcg?.fix, /usermod -aG kvm/);
  const hangs = byName(
    diagnose({ ...GOOD, accel: { accel: "tcg", reason: "KVM present but guests hang" } }),
    "accelerator",
  );
  t.match(hangs?.detail, /KVM present but guests hang/);
  t.notOk(hangs?.fix, "nothing a user can do about a KVM that hangs");

  const low = diagnose({ ...GOOD, space: [{ what: "cache", path: "/c", freeBytes: 512 * 1024 ** 2 }] });
  t.equal(byName(low, "space: cache")?.status, "fail");
  t.match(byName(low, "space: cache")?.fix, /VMDIB_CACHE_DIR/);

  const down = { ...GOOD, mirror: { url: "http://m/debian", release: "bookworm", status: "HTTP 404 Not Found" } };
  t.equal(byName(diagnose(down), "mirror")?.status, "warn", "cached appliance: offline builds still run");
  const fresh = diagnose({ ...down, appliance: undefined });
  t.equal(byName(fresh, "mirror")?.status, "fail", "nothing cached: a build needs the mirror");
  t.match(byName(fresh, "mirror")?.fix, /DIB_DISTRIBUTION_MIRROR/);
  t.match(renderChecks(fresh), /1 problem\(s\) stop a build/);
});

t.test("vmdib doctor: a mirror answering 404 and an empty cache give exit 1 and the fixes", async (t) => {
  const server = createServer((_req, res) => {
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const cache = await mkdtemp(join(tmpdir(), "vmdib-doctor-"));
  t.teardown(async () => {
    server.close();
    await rm(cache, { recursive: true, force: true });
  });
  const port = (server.address() as AddressInfo).port;
  const env = {
    PATH: process.env.PATH,
    HOME: cache,
    VMDIB_CACHE_DIR: cache,
    DIB_DISTRIBUTION_MIRROR: `http://127.0.0.1:${port}/debian`,
  };
  const r = await vmdib(["doctor"], env);
  t.equal(r.code, 1, r.stdout);
  t.match(r.stdout, /fail\s+mirror\s+http:\/\/127\.0\.0\.1:\d+\/debian \(dists\/bookworm\/InRelease\): HTTP 404/);
  t.match(r.stdout, /fix: set DIB_DISTRIBUTION_MIRROR/);
  t.match(r.stdout, /warn\s+appliance\s+none cached/);
  t.match(r.stdout, /fix: vmdib appliance build/);
  const json = await vmdib(["doctor", "--json"], env);
  const checks = JSON.parse(json.stdout) as Check[];
  t.same(
    checks.map((c) => c.name),
    ["node", "qemu", "qemu-img", "9p", "accelerator", "space: cache", "space: work", "appliance", "mirror"],
  );
});
