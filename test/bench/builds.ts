// Tests the pure parts of bench/builds.ts: what a `vmdib build --json` stream says (appliance time, tree cache,
// outputs), the DIB settings and argv of the native row, the install.d edit, the debos recipe, a failure's line.
import t from "tap";
import {
  debosRecipe,
  dibEnv,
  editedScript,
  failureLine,
  nativeDibArgv,
  parseBuildEvents,
  securityMirror,
} from "../../bench/builds.js";

const ev = (time: string, o: Record<string, unknown>) => JSON.stringify({ time: `2026-11-29T16:${time}Z`, ...o });

t.test(
  "a cold build: the appliance from the tree cache verdict to 'built', the summary's outputs and steps",
  async (t) => {
    const e = parseBuildEvents([
      "vmdib: some stderr line",
      ev("38:01.000", { type: "info", message: "debootstrap stage one built on the host (key abc) in 3.0 s" }),
      ev("38:01.400", { type: "info", message: "tree cache miss 9145e08b437fa3ba5ec736fe (not cached): the tree …" }),
      ev("38:05.700", {
        type: "info",
        message: "resolved 197 packages + linux-image-6.1.0-50-amd64, key b839 (4.2 s)",
      }),
      ev("38:44.400", { type: "info", message: "appliance b839b6bc8934078b (built)" }),
      ev("38:44.500", { type: "output", step: "root", line: "appliance 1234 (built)" }),
      ev("40:09.634", {
        type: "summary",
        steps: [{ name: "root", where: "appliance", seconds: 15.6, ok: true, scripts: [] }],
        outputs: [{ path: "/o/t.qcow2", format: "qcow2", bytes: 4499456, sha256: "ab" }],
        caches: [{ name: "tree after post-root.d", result: "miss 9145e08b437fa3ba5ec736fe" }],
        totalSeconds: 120.5,
      }),
    ]);
    t.same(e, {
      applianceBuilt: true,
      applianceMs: 43_000,
      treeCache: "miss",
      steps: [{ name: "root", seconds: 15.6 }],
      outputs: [{ path: "/o/t.qcow2", format: "qcow2", bytes: 4499456 }],
      totalSeconds: 120.5,
    });
  },
);

t.test("a warm build: cached appliance, tree cache hit; a failed one: its error", async (t) => {
  const warm = parseBuildEvents([
    ev("00:00.000", { type: "info", message: "tree cache hit 9145e08b437fa3ba5ec736fe (saved …): skipped" }),
    ev("00:00.100", { type: "info", message: "appliance b839b6bc8934078b (cached)" }),
    ev("00:09.000", {
      type: "summary",
      steps: [],
      outputs: [],
      caches: [{ name: "tree after post-root.d", result: "hit 91" }],
    }),
  ]);
  t.equal(warm.applianceBuilt, false);
  t.equal(warm.applianceMs, undefined);
  t.equal(warm.treeCache, "hit");
  const failed = parseBuildEvents([ev("00:00.000", { type: "error", message: "step install failed in install.d/x" })]);
  t.equal(failed.error, "step install failed in install.d/x");
  t.equal(failed.treeCache, undefined);
});

t.test("DIB settings: the security archive next to the mirror, the release, -security", async (t) => {
  t.equal(securityMirror("http://mirror.example/debian/"), "http://mirror.example/debian-security");
  t.equal(securityMirror("http://mirror.example/pub/deb"), "http://mirror.example/pub/deb-security");
  t.same(dibEnv("http://m.example/debian", "bookworm"), {
    DIB_RELEASE: "bookworm",
    DIB_DISTRIBUTION_MIRROR: "http://m.example/debian",
    DIB_DEBIAN_SECURITY_MIRROR: "http://m.example/debian-security",
    DIB_DEBIAN_SECURITY_SUBPATH: "-security",
  });
});

t.test("native DIB's argv: as root directly, else through sudo -n and env(1)", async (t) => {
  const env = { DIB_RELEASE: "bookworm" };
  t.same(nativeDibArgv([], env, "/o/x"), {
    cmd: "disk-image-create",
    args: ["-t", "tar", "-o", "/o/x", "debian-minimal"],
  });
  t.same(nativeDibArgv(["/usr/bin/sudo", "-n"], env, "/o/x"), {
    cmd: "/usr/bin/sudo",
    args: ["-n", "env", "DIB_RELEASE=bookworm", "disk-image-create", "-t", "tar", "-o", "/o/x", "debian-minimal"],
  });
});

t.test("the edit appends one harmless line, with or without a final newline", async (t) => {
  t.equal(
    editedScript("#!/bin/bash\necho hi\n", 2, "S"),
    "#!/bin/bash\necho hi\ntrue # edited by vmdib's bench, round 2, S\n",
  );
  t.equal(editedScript("echo hi", 1, "S"), "echo hi\ntrue # edited by vmdib's bench, round 1, S\n");
});

t.test("the debos recipe names the release and mirror and packs a tarball", async (t) => {
  const r = debosRecipe("http://m.example/debian", "bookworm");
  t.match(r, /suite: bookworm\n/);
  t.match(r, /mirror: http:\/\/m\.example\/debian\n/);
  t.match(r, /action: pack/);
});

t.test("a failure's line: the last that names an error, not virt-dib's bug-report advice", async (t) => {
  t.equal(
    failureLine([
      "[  24.2] Running: root.d/08-debootstrap",
      "virt-dib: error: libguestfs error: debug: ",
      "",
      "If reporting bugs, run virt-dib with debugging enabled and include the complete output:",
      "  virt-dib -v -x [...]",
    ]),
    "virt-dib: error: libguestfs error: debug:",
  );
  t.equal(failureLine(["No kernel found"]), "No kernel found");
  t.equal(
    failureLine(["Debootstrap | E: debootstrap can only run as root", "x", "Action `debootstrap` failed at stage Run"]),
    "Debootstrap | E: debootstrap can only run as root … Action 'debootstrap' failed at stage Run",
  );
  t.equal(failureLine([]), "(no output)");
});
