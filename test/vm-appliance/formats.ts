// Tests deb.ts (ar), tar.ts and cpio.ts, and rootfs.ts end to end: a tar made here → root-owned merged-/usr cpio →
// parsed back, checking modes, setuid bits, symlinks, hard links, dropped docs and synthesized files.
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { CpioWriter, parseCpio, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../../src/vm/appliance/cpio.js";
import {
  type ArMemberRef,
  debTarEntries,
  debTarMember,
  decompressMember,
  readArMembers,
} from "../../src/vm/appliance/deb.js";
import {
  isDropped,
  mergeUsr,
  normalizePath,
  parseAlternatives,
  RootfsWriter,
  rewriteSymlink,
} from "../../src/vm/appliance/rootfs.js";
import { buildTar, readTar, type TarEntry } from "../../src/vm/appliance/tar.js";

function buildAr(members: { name: string; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [Buffer.from("!<arch>\n")];
  for (const m of members) {
    const h = `${m.name.padEnd(16)}${"0".padEnd(12)}${"0".padEnd(6)}${"0".padEnd(6)}${"100644".padEnd(8)}${String(m.data.length).padEnd(10)}\`\n`;
    parts.push(Buffer.from(h, "latin1"), m.data);
    if (m.data.length % 2) parts.push(Buffer.from("\n"));
  }
  return Buffer.concat(parts);
}

async function entriesOf(tar: Buffer): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const e of readTar([tar.subarray(0, 700), tar.subarray(700)])) out.push(e);
  return out;
}

const LONG = `./usr/share/${"deep/".repeat(25)}file.txt`;

const PKG: Partial<TarEntry>[] = [
  { path: "./", type: "dir", mode: 0o755 },
  { path: "./bin/", type: "dir", mode: 0o755 },
  { path: "./bin/tool", type: "file", mode: 0o755, data: Buffer.from("#!/bin/sh\necho tool\n"), uid: 1000, gid: 1000 },
  { path: "./bin/tool-alias", type: "hardlink", linkname: "./bin/tool" },
  { path: "./usr/", type: "dir", mode: 0o755 },
  { path: "./usr/bin/", type: "dir", mode: 0o755 },
  { path: "./usr/bin/su-thing", type: "file", mode: 0o4755, data: Buffer.from("setuid") },
  { path: "./usr/bin/tool", type: "symlink", linkname: "/bin/tool" }, // compat link that becomes a self-loop
  { path: "./sbin/", type: "dir", mode: 0o755 },
  { path: "./sbin/rel", type: "symlink", linkname: "../usr/bin/su-thing" },
  { path: "./lib/", type: "dir", mode: 0o755 },
  { path: "./lib/libx.so.1", type: "symlink", linkname: "libx.so.1.2" },
  { path: "./lib/libx.so.1.2", type: "file", mode: 0o644, data: Buffer.alloc(3000, 7) },
  { path: "./usr/share/", type: "dir", mode: 0o755 },
  { path: "./usr/share/doc/", type: "dir", mode: 0o755 },
  { path: "./usr/share/doc/pkg/copyright", type: "file", data: Buffer.from("(c)") },
  { path: "./usr/share/doc/pkg/same", type: "file", data: Buffer.from("shared data") },
  { path: "./usr/share/kept", type: "hardlink", linkname: "./usr/share/doc/pkg/same" },
  { path: LONG, type: "file", data: Buffer.from("long") },
  {
    path: "./usr/share/base-passwd/passwd.master",
    type: "file",
    data: Buffer.from("root:x:0:0:root:/root:/bin/bash\n"),
  },
  { path: "./usr/bin/mawk", type: "file", mode: 0o755, data: Buffer.from("awk") },
];

const POSTINST = `#!/bin/sh
set -e
update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\
  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\
  --slave /usr/bin/nawk nawk /usr/bin/mawk
update-alternatives --install /usr/bin/awk awk "$X" 10
`;

t.test("tar round trip: types, modes, long names, chunked input", async (t) => {
  const entries = await entriesOf(buildTar(PKG));
  t.equal(entries.length, PKG.length);
  const by = new Map(entries.map((e) => [e.path, e]));
  t.equal(by.get("./usr/bin/su-thing")?.mode, 0o4755);
  t.equal(by.get("./bin/tool-alias")?.type, "hardlink");
  t.equal(by.get("./bin/tool-alias")?.linkname, "./bin/tool");
  t.equal(by.get(LONG)?.data.toString(), "long");
  t.equal(by.get("./lib/libx.so.1.2")?.data.length, 3000);
  t.equal(by.get("./bin/tool")?.uid, 1000);
});

t.test("tar: bodyTo writes a chosen body to a file instead of memory", async (t) => {
  const tar = buildTar(PKG);
  const whole = await entriesOf(tar);
  const dir = mkdtempSync(join(tmpdir(), "vmdib-tar-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const size of [1, 511, 4096]) {
    const pieces: Buffer[] = [];
    for (let i = 0; i < tar.length; i += size) pieces.push(tar.subarray(i, i + size));
    const bodyTo = (path: string) => (path === "./lib/libx.so.1.2" ? join(dir, "body") : undefined);
    for await (const e of readTar(pieces, { bodyTo })) {
      const want = whole.find((w) => w.path === e.path);
      if (e.file) {
        t.equal(e.data.length, 0);
        t.same(readFileSync(e.file), want?.data, `${size}-byte chunks: the body is in the file`);
      } else t.same(e.data, want?.data);
    }
  }
  await t.rejects(async () => {
    for await (const _ of readTar([tar.subarray(0, 1546)], { bodyTo: () => join(dir, "cut") })) {
    }
  }, /truncated/);
});

t.test("tar: reuseBuffer gives every body in one shared buffer, valid until the next entry", async (t) => {
  const tar = buildTar(PKG);
  const whole = await entriesOf(tar);
  for (const size of [1, 511, 4096, tar.length]) {
    const pieces: Buffer[] = [];
    for (let i = 0; i < tar.length; i += size) pieces.push(tar.subarray(i, i + size));
    const got: TarEntry[] = [];
    const buffers = new Set<ArrayBufferLike>();
    for await (const e of readTar(pieces, { reuseBuffer: true })) {
      got.push({ ...e, data: Buffer.from(e.data) }); // copied before the next entry overwrites it
      if (e.data.length) buffers.add(e.data.buffer);
    }
    t.same(got, whole, `${size}-byte chunks`);
    t.equal(buffers.size, 1, "one buffer for all bodies");
  }
});

t.test("tar: any chunking gives the same entries; wantData skips bodies without reading them", async (t) => {
  const tar = buildTar(PKG);
  const whole = await entriesOf(tar);
  for (const size of [1, 511, 513, 4096]) {
    const pieces: Buffer[] = [];
    for (let i = 0; i < tar.length; i += size) pieces.push(tar.subarray(i, i + size));
    const got: TarEntry[] = [];
    for await (const e of readTar(pieces)) got.push(e);
    t.same(got, whole, `${size}-byte chunks`);
    const seen: string[] = [];
    const some: (TarEntry & { skipped?: boolean })[] = [];
    const wantData = (path: string, size: number) => {
      seen.push(`${path} ${size}`);
      return path.endsWith("su-thing");
    };
    for await (const e of readTar(pieces, { wantData })) some.push(e);
    t.same(
      some.map((e) => e.path),
      whole.map((e) => e.path),
      "every entry still comes",
    );
    t.same(
      some.filter((e) => e.data.length).map((e) => e.data.toString()),
      ["setuid"],
    );
    t.ok(some.find((e) => e.path === "./lib/libx.so.1.2")?.skipped);
    t.ok(seen.includes("./lib/libx.so.1.2 3000"), "asked with the body's size");
  }
  await t.rejects(async () => {
    // Cut inside the body of ./bin/tool (third header at 1024, its body at 1536).
    for await (const _ of readTar([buildTar(PKG.slice(0, 3)).subarray(0, 1546)], { wantData: () => false })) {
    }
  }, /truncated/);
});

t.test("tar: a corrupt header is an error, not garbage", async (t) => {
  const tar = buildTar(PKG);
  tar[10] = (tar[10] ?? 0) ^ 0xff;
  await t.rejects(entriesOf(tar), /checksum/);
});

t.test("ar: members of a .deb, data.tar.xz decompressed with the host's xz", async (t) => {
  const tar = buildTar(PKG.slice(0, 3));
  const xz = spawnSync("xz", ["-c"], { input: tar }).stdout;
  const dir = mkdtempSync(join(tmpdir(), "vmdib-ar-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "p.deb");
  writeFileSync(
    path,
    buildAr([
      { name: "debian-binary", data: Buffer.from("2.0\n") },
      { name: "control.tar.gz", data: Buffer.from("odd") }, // odd length: tests 2-byte alignment
      { name: "data.tar.xz", data: xz },
    ]),
  );
  const members = await readArMembers(path);
  t.same(
    members.map((m) => m.name),
    ["debian-binary", "control.tar.gz", "data.tar.xz"],
  );
  const out: string[] = [];
  for await (const e of readTar(decompressMember(debTarMember(members, "data")))) out.push(e.path);
  t.same(out, ["./", "./bin/", "./bin/tool"]);
  const notAr = join(dir, "not.deb");
  writeFileSync(notAr, "not an ar");
  await t.rejects(readArMembers(notAr), /bad magic/);
  writeFileSync(path, buildAr([{ name: "data.tar.xz", data: Buffer.from("garbage") }]));
  const bad = (await readArMembers(path))[0] as ArMemberRef;
  await t.rejects(async () => {
    for await (const _ of readTar(decompressMember(bad))) {
    }
  }, /xz/);
});

t.test("ar on disk: members located by their headers and streamed from the file", async (t) => {
  const tar = buildTar(PKG.slice(0, 3));
  const dir = mkdtempSync(join(tmpdir(), "vmdib-ar-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "p.deb");
  const gz = spawnSync("gzip", ["-c"], { input: tar }).stdout;
  const zst = spawnSync("zstd", ["-c", "-q"], { input: tar }).stdout;
  writeFileSync(
    path,
    buildAr([
      { name: "debian-binary", data: Buffer.from("2.0\n") },
      { name: "control.tar.gz", data: gz },
      { name: "data.tar.zst", data: zst },
    ]),
  );
  const members = await readArMembers(path);
  t.same(
    members.map((m) => [m.name, m.size]),
    [
      ["debian-binary", 4],
      ["control.tar.gz", gz.length],
      ["data.tar.zst", members[2]?.size],
    ],
  );
  t.same(
    members.map((m) => readFileSync(path).subarray(m.offset, m.offset + m.size)),
    [Buffer.from("2.0\n"), gz, zst],
    "each member's range holds exactly the bytes it was built from",
  );
  for (const which of ["data", "control"] as const) {
    const out: string[] = [];
    for await (const e of await debTarEntries(path, which)) out.push(`${e.path} ${e.data.toString()}`);
    t.same(out, ["./ ", "./bin/ ", "./bin/tool #!/bin/sh\necho tool\n"], which);
  }
  writeFileSync(path, buildAr([{ name: "data.tar.xz", data: Buffer.from("garbage") }]));
  await t.rejects(async () => {
    for await (const _ of await debTarEntries(path, "data")) {
    }
  }, /xz/);
  writeFileSync(path, readFileSync(path).subarray(0, 70));
  await t.rejects(readArMembers(path), /truncated/);
  writeFileSync(path, "not an ar archive");
  await t.rejects(readArMembers(path), /bad magic/);
});

t.test("paths: normalisation, merged /usr, drops, symlink rewriting", async (t) => {
  t.equal(normalizePath("./usr/bin/"), "usr/bin");
  t.equal(normalizePath("./"), "");
  t.equal(mergeUsr("bin/ls"), "usr/bin/ls");
  t.equal(mergeUsr("lib64/ld.so"), "usr/lib64/ld.so");
  t.equal(mergeUsr("libexec/x"), "libexec/x");
  t.ok(isDropped("usr/share/doc/x/copyright"));
  t.ok(isDropped("usr/share/doc"));
  t.notOk(isDropped("usr/share/docs-like"));
  t.ok(isDropped("usr/include/a.h", ["usr/include/"]));
  t.equal(rewriteSymlink("sbin/rel", "usr/sbin/rel", "../usr/bin/x"), "../bin/x");
  t.equal(rewriteSymlink("usr/bin/tool", "usr/bin/tool", "/bin/tool"), undefined);
  t.equal(rewriteSymlink("bin/sh", "usr/bin/sh", "dash"), "dash");
  t.equal(rewriteSymlink("usr/bin/x", "usr/bin/x", "/etc/alternatives/x"), "/etc/alternatives/x");
});

t.test("parseAlternatives: literal calls with slaves; calls with variables skipped", async (t) => {
  const alts = parseAlternatives(POSTINST);
  t.equal(alts.length, 1);
  t.same(alts[0], {
    link: "/usr/bin/awk",
    name: "awk",
    path: "/usr/bin/mawk",
    priority: 5,
    slaves: [
      { link: "/usr/share/man/man1/awk.1.gz", name: "awk.1.gz", path: "/usr/share/man/man1/mawk.1.gz" },
      { link: "/usr/bin/nawk", name: "nawk", path: "/usr/bin/mawk" },
    ],
  });
});

t.test("rootfs → cpio: root-owned, merged /usr, hard links, setuid, drops, synthesized files", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmdib-cpio-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "initrd");
  const fd = openSync(file, "w");
  const cpio = new CpioWriter(fd);
  const root = new RootfsWriter(cpio, 1_700_000_000);
  root.addSkeleton();
  root.addPackage(await entriesOf(buildTar(PKG)), POSTINST);
  root.addPackage(
    await entriesOf(buildTar([{ path: "./bin/tool", type: "file", data: Buffer.from("other") }])),
    undefined,
  );
  root.add({ name: "init", mode: S_IFREG | 0o755, data: Buffer.from("#!/bin/sh\n") });
  root.synthesize({ hostname: "vmdib" });
  cpio.finish();
  closeSync(fd);
  const buf = readFileSync(file);
  t.equal(buf.length % 512, 0, "padded to 512-byte blocks");
  const entries = parseCpio(buf);
  const by = new Map(entries.map((e) => [e.name, e]));
  t.equal(new Set(entries.map((e) => e.name)).size, entries.length, "no duplicate names");
  t.ok(
    entries.every((e) => e.uid === 0 && e.gid === (e.name === "etc/shadow" || e.name === "etc/gshadow" ? 42 : 0)),
    "root-owned",
  );
  const type = (n: string) => (by.get(n)?.mode ?? 0) & S_IFMT;
  t.equal(by.get(".")?.mode, S_IFDIR | 0o755);
  for (const d of ["bin", "sbin", "lib", "lib64"]) {
    t.equal(type(d), S_IFLNK, `${d} is a symlink`);
    t.equal(by.get(d)?.data.toString(), `usr/${d}`);
  }
  t.equal(by.get("tmp")?.mode, S_IFDIR | 0o1777);
  t.equal(by.get("usr/bin/su-thing")?.mode, S_IFREG | 0o4755, "setuid kept");
  t.equal(by.get("usr/bin/tool")?.data.toString(), "", "hard link: data only with the last member");
  t.equal(by.get("usr/bin/tool-alias")?.data.toString(), "#!/bin/sh\necho tool\n");
  t.equal(by.get("usr/bin/tool")?.ino, by.get("usr/bin/tool-alias")?.ino);
  t.equal(by.get("usr/bin/tool")?.nlink, 2);
  t.equal(by.get("usr/bin/tool")?.mode, S_IFREG | 0o755);
  t.ok(root.conflicts.includes("usr/bin/tool"), "second package's /bin/tool is a recorded conflict");
  t.equal(by.get("usr/share/kept")?.data.toString(), "shared data", "link kept although its target was a dropped doc");
  t.equal(by.get("usr/share/kept")?.nlink, 1);
  t.notOk(
    [...by.keys()].some((n) => n.startsWith("usr/share/doc")),
    "docs dropped",
  );
  t.equal(by.get("usr/sbin/rel")?.data.toString(), "../bin/su-thing");
  t.equal(by.get("usr/lib/libx.so.1")?.data.toString(), "libx.so.1.2");
  t.equal(by.get(LONG.slice(2))?.data.toString(), "long");
  t.equal(by.get("init")?.mode, S_IFREG | 0o755);
  t.match(by.get("etc/passwd")?.data.toString() ?? "", /^root:x:0:0:.*\nsshd:x:/s);
  t.match(by.get("etc/shadow")?.data.toString() ?? "", /^root:\*:/);
  t.equal(by.get("etc/shadow")?.mode, S_IFREG | 0o640);
  t.equal(by.get("usr/bin/awk")?.data.toString(), "/etc/alternatives/awk");
  t.equal(by.get("etc/alternatives/awk")?.data.toString(), "/usr/bin/mawk");
  t.equal(by.get("usr/bin/nawk")?.data.toString(), "/etc/alternatives/nawk");
  t.notOk(by.has("etc/alternatives/awk.1.gz"), "slave whose target was dropped is skipped");
  t.equal(type("dev/console"), 0o020000);
  // Parents come before children, as the kernel's unpacker needs.
  const seen = new Set<string>();
  for (const e of entries) {
    const parent = e.name.includes("/") ? e.name.slice(0, e.name.lastIndexOf("/")) : ".";
    if (e.name !== ".") t.ok(seen.has(parent) || parent === ".", `${e.name} after its parent`);
    seen.add(e.name);
  }
});
