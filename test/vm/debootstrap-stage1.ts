// Against the real mirror: the stage-one tarball for bookworm holds the package set `debootstrap --print-debs` picks;
// run as root, its extracted tree equals what `debootstrap --foreign` leaves (the differential test); a second call
// is a cache hit. Skips the parts whose host tool (debootstrap) is missing.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import t from "tap";
import { resolveMirror } from "../../src/mirror.js";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";
import { prepareDebootstrapStage1 } from "../../src/rootfs/debootstrap.js";
import { readTar } from "../../src/vm/appliance/tar.js";

const DEBOOTSTRAP = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"].find((p) => existsSync(p));
const mirror = resolveMirror(process.env);
const work = mkdtempSync(join(tmpdir(), "vmdib-stage1-net-"));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

const request = {
  elements: [
    { name: "debian-minimal", path: join(BUILTIN_ELEMENTS_DIR, "debian-minimal") },
    { name: "debootstrap", path: join(BUILTIN_ELEMENTS_DIR, "debootstrap") },
  ],
  env: { DIB_DISTRIBUTION_MIRROR: mirror, DIB_RELEASE: "bookworm" },
  arch: "amd64",
  imageCache: join(work, "cache"),
  guestImageCache: "/vmdib/cache",
};

async function tarFiles(path: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for await (const e of readTar([execFileSync("zstd", ["-dc", path], { maxBuffer: 1 << 30 })])) {
    if (/^\.\/(debootstrap|var\/lib\/vmdib-apt-lists)\//.test(e.path)) out.set(e.path.slice(2), e.data);
  }
  return out;
}

/** path → type, mode, owner, link target or content hash, device numbers: what a debootstrap tree is made of. */
function describeTree(root: string, ignore: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const rel = relative(root, path);
      if (ignore.some((i) => rel === i || rel.startsWith(`${i}/`))) continue;
      const st = lstatSync(path);
      const owner = `${st.uid}:${st.gid}`;
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) out.set(rel, `link ${readlinkSync(path)} ${owner}`);
      else if (st.isDirectory()) {
        out.set(rel, `dir ${mode} ${owner}`);
        walk(path);
      } else if (st.isFile()) {
        const hash = createHash("sha256").update(readFileSync(path)).digest("hex").slice(0, 16);
        out.set(rel, `file ${mode} ${owner} ${hash} nlink=${st.nlink}`);
      } else out.set(rel, `node ${mode} ${owner} ${st.rdev}`);
    }
  };
  walk(root);
  return out;
}

t.test("stage one for bookworm: debootstrap's package set, cached", async (t) => {
  const first = await prepareDebootstrapStage1(request);
  if (!first?.write) throw new Error("expected a stage-one tarball to write for bookworm");
  t.notOk(existsSync(first.hostPath), "written only when asked (the build does it while the VM boots)");
  await first.write();
  t.ok(existsSync(first.hostPath));
  t.equal(first.guestPath, `/vmdib/cache/${first.hostPath.split("/").pop()}`);
  t.equal(first.env.VMDIB_DEBOOTSTRAP_STAGE1, first.guestPath);
  const files = await tarFiles(first.hostPath);
  const ours = [files.get("debootstrap/required"), files.get("debootstrap/base")]
    .join(" ")
    .split(/\s+/)
    .filter(Boolean)
    .sort();
  t.ok(ours.includes("apt") && ours.includes("usr-is-merged") && !ours.includes("usrmerge"));
  // apt's whole index for the guest, as the signed InRelease that comes with it lists it.
  const staged = [...files.keys()].filter((p) => /^var\/lib\/vmdib-apt-lists\/./.test(p));
  const inRelease = files.get(staged.find((p) => p.endsWith("_dists_bookworm_InRelease")) ?? "")?.toString() ?? "";
  const index = files.get(staged.find((p) => p.endsWith("_dists_bookworm_main_binary-amd64_Packages")) ?? "");
  t.equal(staged.length, 2, staged.join(" "));
  const sum = index ? `${createHash("sha256").update(index).digest("hex")} +${index.length} ` : "none";
  t.match(inRelease, new RegExp(` ${sum}main/binary-amd64/Packages\n`), "the Packages InRelease lists");

  const again = await prepareDebootstrapStage1(request);
  t.match(again, { key: first.key, hit: true, hostPath: first.hostPath }, "second call: cache hit");
  t.equal(again?.write, undefined, "nothing left to write");

  t.test("same packages as debootstrap --print-debs", { skip: DEBOOTSTRAP ? false : "no debootstrap" }, async (t) => {
    const target = join(work, "print-debs");
    const printed = execFileSync(
      DEBOOTSTRAP as string,
      ["--print-debs", "--variant=minbase", "--arch=amd64", "bookworm", target, mirror],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    t.same(ours, printed.split(/\s+/).filter(Boolean).sort());
  });

  const asRoot = DEBOOTSTRAP && process.getuid?.() === 0 ? false : "needs debootstrap and root (debootstrap --foreign)";
  t.test("extracted, it equals debootstrap --foreign's tree", { skip: asRoot }, async (t) => {
    const real = join(work, "foreign");
    const mine = join(work, "mine");
    execFileSync(DEBOOTSTRAP as string, ["--foreign", "--variant=minbase", "--arch=amd64", "bookworm", real, mirror], {
      stdio: "ignore",
    });
    execFileSync("mkdir", ["-p", mine]);
    execFileSync("tar", ["-C", mine, "--numeric-owner", "--zstd", "-xf", first.hostPath]);
    // Not ours to reproduce: the build machine's own files (copied in the guest), debootstrap's scripts (copied
    // from the guest's debootstrap), its log, the index files (ours hold only the stanzas the second stage reads),
    // and apt's whole index staged for the guest, and /proc, a link debootstrap makes only inside a container.
    const ignore = [
      "proc",
      "etc/hostname",
      "etc/resolv.conf",
      "debootstrap/debootstrap",
      "debootstrap/functions",
      "debootstrap/suite-script",
      "debootstrap/debian-common",
      "debootstrap/debootstrap.log",
      "var/lib/apt/lists",
      "var/lib/vmdib-apt-lists",
    ];
    const a = describeTree(real, ignore);
    const b = describeTree(mine, ignore);
    const differ = [...new Set([...a.keys(), ...b.keys()])].filter((p) => a.get(p) !== b.get(p));
    t.same(
      differ.slice(0, 20).map((p) => `${p}: ${a.get(p)} | ${b.get(p)}`),
      [],
      `${a.size} paths compared`,
    );
    t.ok(a.size > 5000);
  });
});
