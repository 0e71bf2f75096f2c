// Tests for src/rootfs/debootstrap.ts: debootstrap's package selection on fixture indexes, the guest contract
// (inputs string, paths), the stage-one tar writer on fixture .debs, and 08-debootstrap's side of the contract.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { BUILTIN_ELEMENTS_DIR, PACKAGE_ROOT } from "../../src/paths.js";
import {
  aptListName,
  aptListPath,
  debCachePath,
  debootstrapDeps,
  mergeUsrPath,
  parseExtraArgs,
  resolveDebootstrapDeps,
  selectDebootstrapPackages,
  stage1InputsString,
  stage1Plan,
  writeStage1Tar,
} from "../../src/rootfs/debootstrap.js";
import type { FetchedDeb } from "../../src/vm/appliance/archive.js";
import { parsePackages } from "../../src/vm/appliance/packages.js";
import { buildTar, readTar, type TarEntry } from "../../src/vm/appliance/tar.js";

/** A Packages index in the archive's format; fields per package. */
function packages(stanzas: Record<string, Record<string, string>>): string {
  return Object.entries(stanzas)
    .map(([name, f]) => {
      const fields = { Package: name, Version: "1.0", Architecture: "amd64", Priority: "optional", ...f };
      const lines = Object.entries(fields).map(([k, v]) => `${k}: ${v}`);
      return `${lines.join("\n")}\nFilename: pool/main/${name[0]}/${name}/${name}_1.0_amd64.deb\nSize: 10\nSHA256: ${"0".repeat(64)}\n`;
    })
    .join("\n");
}

const FIXTURE = packages({
  "base-files": { Priority: "required" },
  libc6: { Priority: "required", Depends: "libgcc-s1 (>= 3.0)" },
  "libgcc-s1": { Priority: "optional", Depends: "gcc-12-base (= 12.2.0), libc6 (>= 2.35)" },
  "gcc-12-base": {},
  mawk: { Priority: "required", Provides: "awk" },
  dpkg: { Priority: "required", "Pre-Depends": "libc6 (>= 2.34), tar (>= 1.28-1)", Depends: "awk" },
  tar: { Priority: "required" },
  // The second alternative is never taken, even though it exists.
  login: { Priority: "required", Depends: "libpam-runtime | other-login, libpam0g:any" },
  "libpam-runtime": {},
  "other-login": {},
  libpam0g: {},
  // usrmerge is pruned from dependencies on bookworm and later; usr-is-merged is added on bookworm.
  "init-system-helpers": { Priority: "required", Depends: "usrmerge | usr-is-merged" },
  usrmerge: {},
  "usr-is-merged": {},
  apt: { Priority: "important", Depends: "libapt-pkg6.0, libc6, adduser" },
  "libapt-pkg6.0": {},
  adduser: { Priority: "important" },
  "ca-certificates": {},
  vim: { Depends: "vim-common" },
  "vim-common": {},
});

t.test("debootstrapDeps: first alternative, no versions or qualifiers", async (t) => {
  t.same(debootstrapDeps({ preDepends: "a (>= 1)", depends: "b | c, d:any (<< 2), e" }), ["a", "b", "d", "e"]);
  t.same(debootstrapDeps({ preDepends: "", depends: "" }), []);
});

t.test("selection as debootstrap --variant=minbase makes it", async (t) => {
  const index = parsePackages(FIXTURE);
  const sel = selectDebootstrapPackages([index], { codename: "bookworm" });
  t.same(sel.required, [
    "base-files",
    "dpkg",
    "gcc-12-base",
    "init-system-helpers",
    "libc6",
    "libgcc-s1",
    "libpam-runtime",
    "libpam0g",
    "login",
    "mawk",
    "tar",
    "usr-is-merged",
  ]);
  t.notOk(sel.required.includes("usrmerge"), "usrmerge pruned from dependencies");
  t.notOk(sel.required.includes("other-login"), "only the first alternative");
  t.same(sel.base, ["adduser", "apt", "libapt-pkg6.0"], "apt and its closure, minus what is required");

  const trixie = selectDebootstrapPackages([index], { codename: "trixie" });
  t.notOk(trixie.required.includes("usr-is-merged"), "usr-is-merged is bookworm's only");

  const opts = { codename: "bookworm", include: ["vim"], exclude: ["adduser", "tar"], https: true };
  const custom = selectDebootstrapPackages([index], opts);
  t.ok(custom.base.includes("vim") && custom.base.includes("vim-common"), "--include and its dependencies");
  t.ok(custom.base.includes("ca-certificates"), "https mirror: ca-certificates");
  t.ok(custom.required.includes("tar"), "--exclude does not remove a dependency (dpkg pre-depends on tar)");
  t.ok(custom.base.includes("adduser"), "nor one of apt's");
  t.throws(
    () => selectDebootstrapPackages([index], { codename: "bookworm", include: ["nope"] }),
    /not in the archive index: nope/,
  );
});

t.test("selection over several components: names from all, virtual names dropped", async (t) => {
  const main = parsePackages(packages({ a: { Priority: "required", Depends: "b, virtual-thing" } }));
  const contrib = parsePackages(packages({ b: {}, apt: {} }));
  t.same(resolveDebootstrapDeps([main, contrib], ["a"]), ["a", "b"]);
  t.same(selectDebootstrapPackages([main, contrib], { codename: "sid" }), { required: ["a", "b"], base: ["apt"] });
});

t.test("the guest contract: extra args, inputs string, debootstrap's paths", async (t) => {
  t.same(parseExtraArgs(""), { include: [], exclude: [] });
  t.same(parseExtraArgs("--include=a,b --exclude c --verbose"), { include: ["a", "b"], exclude: ["c"] });
  t.equal(parseExtraArgs("--no-check-gpg"), undefined, "anything else: the guest runs debootstrap itself");
  t.equal(parseExtraArgs("--variant=buildd"), undefined);
  t.equal(
    stage1InputsString({
      mirror: "http://m/debian/",
      release: "bookworm",
      arch: "amd64",
      components: "main",
      extraArgs: "",
    }),
    "http://m/debian|bookworm|amd64|main|",
  );
  t.equal(
    aptListPath("http://m.example/debian", "dists/bookworm/main/binary-amd64/Packages"),
    "var/lib/apt/lists/m.example_debian_dists_bookworm_main_binary-amd64_Packages",
  );
  t.equal(aptListName("http://m.example/debian/dists/bookworm/InRelease"), "m.example_debian_dists_bookworm_InRelease");
  t.equal(
    aptListName("https://user:pw@m.example:8080/a_b~c/dists/x/main/binary-amd64/Packages"),
    "m.example:8080_a%5fb%7ec_dists_x_main_binary-amd64_Packages",
    "credentials dropped, apt's quoting",
  );
  t.equal(
    debCachePath({ name: "bsdutils", version: "1:2.38.1-5", architecture: "amd64" }),
    "var/cache/apt/archives/bsdutils_1%3a2.38.1-5_amd64.deb",
  );
  t.equal(mergeUsrPath("lib64/ld.so"), "usr/lib64/ld.so");
  t.equal(mergeUsrPath("libfoo/x"), "libfoo/x");
  t.equal(mergeUsrPath("etc/bin"), "etc/bin");
});

t.test("stage1Plan: a debootstrap element on a Debian mirror with options it reproduces", async (t) => {
  const ours = [
    { name: "debian-minimal", path: "/x/debian-minimal" },
    { name: "debootstrap", path: join(BUILTIN_ELEMENTS_DIR, "debootstrap") },
  ];
  const env = { DIB_DISTRIBUTION_MIRROR: "http://m/debian/" };
  const ok = stage1Plan({ elements: ours, env, arch: "amd64" });
  t.match(ok, { ok: true, mirror: "http://m/debian", release: "bookworm", components: ["main"] });
  t.equal(ok.ok && ok.inputs, "http://m/debian|bookworm|amd64|main|");
  const other = stage1Plan({
    elements: ours,
    env: { ...env, DIB_DEBIAN_DISTRIBUTION_MIRROR: "http://o/d" },
    arch: "amd64",
  });
  t.match(other, { ok: true, mirror: "http://o/d" }, "the debian-specific mirror wins, as in environment.d");
  const no = (extra: Record<string, string>, elements = ours) =>
    stage1Plan({ elements, env: { ...env, ...extra }, arch: "amd64" });
  t.match(no({}, [ours[1] as (typeof ours)[number]]), { ok: false, reason: /debian-minimal/ });
  t.match(
    no({}, [ours[0] as (typeof ours)[number], { name: "debootstrap", path: "/upstream/debootstrap" }]),
    {
      ok: true,
      inputs: "http://m/debian|bookworm|amd64|main|",
    },
    "DIB's own debootstrap element too: the guest's debootstrap wrapper runs the second stage for it",
  );
  t.match(no({}, [ours[0] as (typeof ours)[number]]), { ok: false, reason: /no debootstrap element/ });
  t.match(no({ DIB_APT_KEYRING: "/k.gpg" }), { ok: false });
  t.match(no({ DIB_DEBOOTSTRAP_TOOL: "mmdebstrap" }), { ok: false });
  t.match(no({ DIB_DEBIAN_DEBOOTSTRAP_SCRIPT: "sid" }), { ok: false });
  t.match(no({ DIB_DEBOOTSTRAP_EXTRA_ARGS: "--foo" }), { ok: false, reason: /--foo/ });
  t.match(stage1Plan({ elements: ours, env: {}, arch: "amd64" }), { ok: false, reason: /mirror/ });
});

/** A .deb (ar: debian-binary, control.tar, data.tar uncompressed) holding `entries`. */
function makeDeb(entries: Partial<TarEntry>[]): Buffer {
  const member = (name: string, data: Buffer) => {
    const h = Buffer.alloc(60, " ");
    h.write(name, 0);
    h.write("0", 16);
    h.write("0", 28);
    h.write("0", 34);
    h.write("100644", 40);
    h.write(String(data.length), 48);
    h.write("`\n", 58);
    return Buffer.concat([h, data, data.length % 2 ? Buffer.from("\n") : Buffer.alloc(0)]);
  };
  return Buffer.concat([
    Buffer.from("!<arch>\n"),
    member("debian-binary", Buffer.from("2.0\n")),
    member("control.tar", buildTar([])),
    member("data.tar", buildTar(entries)),
  ]);
}

t.test("writeStage1Tar: what debootstrap --foreign leaves, root-owned, merged /usr", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmdib-stage1-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const deb = (name: string, entries: Partial<TarEntry>[], version = "1.0"): FetchedDeb => {
    const path = join(dir, `${name}.deb`);
    writeFileSync(path, makeDeb(entries));
    const pkg = {
      name,
      version,
      architecture: "amd64",
      depends: "",
      preDepends: "",
      provides: "",
      filename: `pool/main/${name}.deb`,
      sha256: "",
      size: 0,
      essential: false,
      priority: "required",
    };
    return { pkg, path };
  };
  const a = deb("aaa", [
    { path: "./", type: "dir", mode: 0o755 },
    { path: "./bin/", type: "dir", mode: 0o755 },
    { path: "./bin/sh", type: "symlink", linkname: "dash" },
    { path: "./bin/dash", type: "file", mode: 0o755, data: Buffer.from("dash") },
    { path: "./bin/rdash", type: "hardlink", linkname: "./bin/dash" },
    { path: "./usr/bin/", type: "dir", mode: 0o755 },
    { path: "./usr/bin/su", type: "file", mode: 0o4755, data: Buffer.from("su") },
    { path: "./var/local/", type: "dir", mode: 0o2775, gid: 50 },
  ]);
  const b = deb("bbb", [
    { path: "./usr/bin/", type: "dir", mode: 0o755 },
    { path: "./lib64/", type: "dir", mode: 0o755 },
    { path: "./lib64/ld.so", type: "symlink", linkname: "/lib/x86_64-linux-gnu/ld.so" },
  ]);
  const apt = deb("apt", [{ path: "./usr/bin/apt", type: "file", data: Buffer.from("apt") }], "1:2.6");
  const index = packages({ aaa: {}, bbb: {}, apt: {}, other: {} });
  const packagesXz = join(dir, "Packages.xz");
  writeFileSync(packagesXz, execFileSync("xz", ["-z", "-c"], { input: index }));
  const inRelease = join(dir, "InRelease");
  writeFileSync(inRelease, "signed\n");
  const aptIndex = {
    inRelease,
    packages: [
      {
        component: "main",
        compressedPath: packagesXz,
        size: Buffer.byteLength(index),
        sha256: createHash("sha256").update(index).digest("hex"),
      },
    ],
  };
  const out = join(dir, "stage1.tar.zst");
  await writeStage1Tar(
    {
      mirror: "http://m.example/debian",
      suite: "bookworm",
      codename: "bookworm",
      arch: "amd64",
      components: ["main"],
      selection: { required: ["aaa", "bbb"], base: ["apt"] },
      debs: new Map([a, b, apt].map((d) => [d.pkg.name, d])),
      componentFiles: [{ component: "main", packagesPath: packagesXz, names: ["aaa", "apt", "bbb"] }],
      aptIndex,
      mtime: 1700000000,
      key: "k",
    },
    out,
  );
  const entries = new Map<string, TarEntry>();
  for await (const e of readTar([execFileSync("zstd", ["-dc", out])]))
    entries.set(e.path.replace(/^\.\//, "").replace(/\/$/, ""), e);
  const get = (p: string) => entries.get(p);
  t.equal(get("usr/bin/dash")?.data.toString(), "dash", "bin/ moved under usr/");
  t.equal(get("usr/bin/sh")?.linkname, "dash", "relative links moved as they are");
  t.match(get("usr/bin/rdash"), { type: "hardlink", linkname: "./usr/bin/dash" }, "hard links follow the move");
  t.match(get("usr/lib64/ld.so"), { type: "symlink", linkname: "/lib/x86_64-linux-gnu/ld.so" });
  t.match(get("bin"), { type: "symlink", linkname: "usr/bin" });
  t.match(get("lib64"), { type: "symlink", linkname: "usr/lib64" });
  t.notOk(entries.has("sbin") || entries.has("lib"), "links only for directories that existed");
  t.equal(get("usr/bin/su")?.mode, 0o4755, "setuid kept");
  t.match(get("var/local"), { mode: 0o2775, gid: 50 }, "package ownership kept");
  t.notOk(entries.has("usr/bin/apt"), "base packages are not extracted by the first stage");
  t.ok(entries.has("var/cache/apt/archives/apt_1%3a2.6_amd64.deb"), "every .deb in apt's cache");
  t.match(get("dev/console"), { type: "chardev", devmajor: 5, devminor: 1, mode: 0o666 });
  t.match(get("dev/fd"), { type: "symlink", linkname: "/proc/self/fd" });
  t.equal(get("debootstrap/required")?.data.toString(), "\naaa\nbbb\n");
  t.equal(get("debootstrap/base")?.data.toString(), "apt \n");
  t.equal(
    get("debootstrap/debpaths")?.data.toString(),
    "aaa /var/cache/apt/archives/aaa_1.0_amd64.deb\napt /var/cache/apt/archives/apt_1%3a2.6_amd64.deb\n" +
      "bbb /var/cache/apt/archives/bbb_1.0_amd64.deb\n",
  );
  t.equal(get("debootstrap/mirror")?.data.toString(), "http://m.example/debian\n");
  t.equal(get("etc/fstab")?.data.toString(), "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n");
  const list = get("var/lib/apt/lists/m.example_debian_dists_bookworm_main_binary-amd64_Packages")?.data.toString();
  t.match(list, /Package: aaa/);
  t.notMatch(list, /Package: other/, "only the selected stanzas");
  const staged = "var/lib/vmdib-apt-lists/m.example_debian_dists_bookworm_";
  t.equal(get(`${staged}InRelease`)?.data.toString(), "signed\n", "apt's InRelease, under apt's name");
  t.equal(get(`${staged}main_binary-amd64_Packages`)?.data.toString(), index, "and the whole index, uncompressed");
  t.ok(
    [...entries.values()].every((e) => e.uid === 0),
    "root-owned",
  );

  // A stage one of only these required packages, written to NAME.tar.zst.
  const writeRequired = (name: string, debs: FetchedDeb[], more: { aptIndex?: typeof aptIndex } = {}) => {
    const names = debs.map((d) => d.pkg.name);
    return writeStage1Tar(
      {
        mirror: "http://m/d",
        suite: "bookworm",
        codename: "bookworm",
        arch: "amd64",
        components: ["main"],
        selection: { required: names, base: [] },
        debs: new Map(debs.map((d) => [d.pkg.name, d])),
        componentFiles: [{ component: "main", packagesPath: packagesXz, names }],
        ...more,
        mtime: 0,
        key: "k",
      },
      join(dir, `${name}.tar.zst`),
    );
  };
  const corrupt = { ...aptIndex, packages: [{ ...aptIndex.packages[0], sha256: "0".repeat(64) }] } as typeof aptIndex;
  await t.rejects(
    writeRequired("corrupt", [a], { aptIndex: corrupt }),
    /main\/binary-amd64\/Packages does not match its signed SHA256/,
  );

  const clash = deb("ccc", [{ path: "./usr/bin/dash", type: "file", data: Buffer.from("other") }]);
  await t.rejects(
    writeRequired("clash", [a, clash]),
    /ccc ships \/usr\/bin\/dash/,
    "a path shipped twice fails as debootstrap's tar -k does",
  );
  t.notOk(existsSync(join(dir, "clash.tar.zst")), "no partial tarball under the final name");
});

const noDebootstrap = existsSync("/usr/share/debootstrap/scripts/bookworm") ? false : "debootstrap is not installed";

t.test("08-debootstrap rebuilds the same inputs string and refuses a mismatch", { skip: noDebootstrap }, async (t) => {
  const script = join(PACKAGE_ROOT, "elements/debootstrap/root.d/08-debootstrap");
  const dir = mkdtempSync(join(tmpdir(), "vmdib-stage1-sh-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tarball = join(dir, "s.tar");
  writeFileSync(tarball, "");
  const inputs = stage1InputsString({
    mirror: "http://m/debian",
    release: "bookworm",
    arch: "amd64",
    components: "main",
    extraArgs: "",
  });
  const check = (env: Record<string, string>) =>
    execFileSync(
      "bash",
      [
        "-c",
        `set -eu; fail() { exit 9; }; eval "$(sed -n '/^host_stage1_usable()/,/^}/p' "$0")"; ` +
          "if host_stage1_usable; then echo yes; else echo no; fi",
        script,
      ],
      {
        env: {
          PATH: process.env.PATH ?? "",
          DIB_DISTRIBUTION_MIRROR: "http://m/debian/",
          DIB_RELEASE: "bookworm",
          ARCH: "amd64",
          VMDIB_DEBOOTSTRAP_STAGE1: tarball,
          VMDIB_DEBOOTSTRAP_STAGE1_INPUTS: inputs,
          ...env,
        },
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      },
    )
      .trim()
      .split("\n")
      .pop();
  t.equal(check({}), "yes");
  t.equal(check({ DIB_DEBIAN_COMPONENTS: "main,contrib" }), "no", "other components");
  t.equal(check({ DIB_DEBOOTSTRAP_EXTRA_ARGS: "--include=vim" }), "no", "other arguments");
  t.equal(check({ DIB_DEBOOTSTRAP_TOOL: "mmdebstrap" }), "no", "another tool asked for");
  t.equal(check({ VMDIB_DEBOOTSTRAP_STAGE1: join(dir, "missing.tar") }), "no", "tarball gone");
});
