// Tests src/host-tools.ts: request parsing, which zstd calls the host runs (and which it refuses), which .debs it
// decompresses, the server's file protocol against a fake zstd, and its .deb answers against the host's own dpkg-deb
// (packages built here with each compression), in a temporary directory.
import { read, write } from "node:fs";
import { copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t, { type Test } from "tap";
import { debDataPlan, parseToolRequest, serveHostTools, zstdHostArgv } from "../src/host-tools.js";
import type { ArMemberRef } from "../src/vm/appliance/deb.js";
import { buildDeb } from "./helpers/deb.js";

const V = "*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***";

t.test("parses version and arguments", async (t) => {
  t.same(parseToolRequest(`version ${V}\narg -q\narg -9\narg -T0\narg -c\n`), {
    version: V,
    args: ["-q", "-9", "-T0", "-c"],
  });
});

t.test("mkinitramfs's call runs as is, the input on stdin with its size", async (t) => {
  t.same(zstdHostArgv({ version: V, args: ["-q", "-9", "-T0", "-c"] }, `${V}\n`, 126), {
    argv: ["-q", "-9", "-T0", "-c", "--stream-size=126"],
  });
});

t.test("refuses another version, other options, no -c", async (t) => {
  t.match(zstdHostArgv({ version: V.replace("1.5.4", "1.5.5"), args: ["-c"] }, V, 1), { refused: /v1.5.5/ });
  t.match(zstdHostArgv({ version: "", args: ["-c"] }, V, 1), { refused: /unknown version/ });
  t.match(zstdHostArgv({ version: V, args: ["-c", "-o", "/etc/passwd"] }, V, 1), { refused: /'-o'/ });
  t.match(zstdHostArgv({ version: V, args: ["-c", "--ultra"] }, V, 1), { refused: /'--ultra'/ });
  t.match(zstdHostArgv({ version: V, args: ["-q", "-9"] }, V, 1), { refused: /-c/ });
});

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  );

async function waitFor(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await exists(path)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${path} never appeared`);
}

/** A server on a fresh directory whose zstd is a fake that copies stdin to stdout behind a prefix. */
async function fakeServer(t: Test): Promise<{ dir: string; runs: string[][]; reports: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-host-tools-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const runs: string[][] = [];
  const reports: string[] = [];
  const server = await serveHostTools(dir, V, {
    zstd: "/fake/zstd",
    intervalMs: 5,
    report: (m) => reports.push(m),
    run: async (_file, argv, stdin, stdout) => {
      runs.push([...argv]);
      if (typeof stdin !== "number") throw new Error("zstd gets a descriptor");
      const input = Buffer.alloc(64);
      const { bytesRead } = await new Promise<{ bytesRead: number }>((res, rej) =>
        read(stdin, input, 0, 64, 0, (err, bytesRead) => (err ? rej(err) : res({ bytesRead }))),
      );
      await new Promise<void>((res, rej) =>
        write(stdout, `compressed:${input.subarray(0, bytesRead)}`, (err) => (err ? rej(err) : res())),
      );
    },
  });
  t.teardown(() => server.stop());
  return { dir, runs, reports };
}

t.test("answers a request with .out then .done, a refusal with .fail", async (t) => {
  const { dir, runs, reports } = await fakeServer(t);
  await writeFile(join(dir, "zstd-7.in"), "cpio");
  await writeFile(join(dir, "zstd-7.req"), `version ${V}\narg -q\narg -9\narg -c\n`);
  await waitFor(join(dir, "zstd-7.done"));
  t.equal(await readFile(join(dir, "zstd-7.out"), "utf8"), "compressed:cpio");
  t.same(runs, [["-q", "-9", "-c", "--stream-size=4"]]);

  await writeFile(join(dir, "zstd-8.in"), "cpio");
  await writeFile(join(dir, "zstd-8.req"), `version other\narg -c\n`);
  await waitFor(join(dir, "zstd-8.fail"));
  t.match(await readFile(join(dir, "zstd-8.fail"), "utf8"), /other/);
  t.equal(runs.length, 1);

  // Names that are not requests are left alone.
  await writeFile(join(dir, "evil;rm.req"), `version ${V}\narg -c\n`);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(runs.length, 1);
  t.equal(reports.length, 2);
});

t.test("the client the server puts in the directory: the answer on stdout, 75 when refused", async (t) => {
  const { dir, runs } = await fakeServer(t);
  const input = join(dir, "..", `${dir.split("/").pop()}.cpio`);
  await writeFile(input, "cpio");
  t.teardown(() => rm(input, { force: true }));
  const client = (...lines: string[]) =>
    execa("sh", [join(dir, "client"), "zstd", input, ...lines], { reject: false, stripFinalNewline: false });
  const ok = await client(`version ${V}`, "arg -q", "arg -c");
  t.equal(ok.exitCode, 0, ok.stderr);
  t.equal(ok.stdout, "compressed:cpio");
  t.same(runs, [["-q", "-c", "--stream-size=4"]]);
  const refused = await client("version other", "arg -c");
  t.equal(refused.exitCode, 75, "refused: the caller runs its own program");
  t.match(refused.stderr, /^vmdib: .*other.*; running it in the helper VM\n$/);
  t.equal(refused.stdout, "");
  t.same(await readdir(dir), ["client"], "nothing else left behind");
});

t.test("a failing zstd becomes .fail, not an error", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-host-tools-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const server = await serveHostTools(dir, V, {
    zstd: "/fake/zstd",
    intervalMs: 5,
    report: () => {},
    run: async () => {
      throw new Error("zstd: error 70 : Write error");
    },
  });
  t.teardown(() => server.stop());
  await writeFile(join(dir, "zstd-9.in"), "cpio");
  await writeFile(join(dir, "zstd-9.req"), `version ${V}\narg -c\n`);
  await waitFor(join(dir, "zstd-9.fail"));
  t.match(await readFile(join(dir, "zstd-9.fail"), "utf8"), /Write error/);
});

// The guest writes the directory over a share where its symlinks are the host's: none may make the host read or write
// a file outside it.
t.test("links the guest plants are never followed", async (t) => {
  const { dir, runs } = await fakeServer(t);
  const outside = await mkdtemp(join(tmpdir(), "vmdib-host-tools-outside-"));
  t.teardown(() => rm(outside, { recursive: true, force: true }));
  const secret = join(outside, "secret");
  await writeFile(secret, "host secret");

  await symlink(secret, join(dir, "zstd-1.in"));
  await writeFile(join(dir, "zstd-1.req"), `version ${V}\narg -c\n`);
  await waitFor(join(dir, "zstd-1.fail"));
  t.notOk(await exists(join(dir, "zstd-1.out")), "an input that is a link is not read");

  await writeFile(join(dir, "zstd-2.in"), "cpio");
  await symlink(secret, join(dir, "zstd-2.out"));
  await writeFile(join(dir, "zstd-2.req"), `version ${V}\narg -c\n`);
  await waitFor(join(dir, "zstd-2.fail"));
  t.equal(await readFile(secret, "utf8"), "host secret", "an answer is never written through a link");

  await writeFile(join(dir, "zstd-3.in"), "cpio");
  await symlink(secret, join(dir, "zstd-3.req"));
  await waitFor(join(dir, "zstd-3.fail"));
  t.equal(runs.length, 0, "a request that is a link is not read");

  await writeFile(join(dir, "zstd-4.in"), "cpio");
  await symlink(secret, join(dir, "zstd-4.fail"));
  await writeFile(join(dir, "zstd-4.req"), `version other\narg -c\n`);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await readFile(secret, "utf8"), "host secret", "a refusal is never written through a link");
});

t.test("a directory swapped for a link stops the server", async (t) => {
  const { dir, runs, reports } = await fakeServer(t);
  const elsewhere = await mkdtemp(join(tmpdir(), "vmdib-host-tools-elsewhere-"));
  t.teardown(() => rm(elsewhere, { recursive: true, force: true }));
  await writeFile(join(elsewhere, "zstd-5.in"), "cpio");
  await writeFile(join(elsewhere, "zstd-5.req"), `version ${V}\narg -c\n`);
  await rm(dir, { recursive: true });
  await symlink(elsewhere, dir);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(runs.length, 0);
  t.notOk(await exists(join(elsewhere, "zstd-5.work")), "nothing there was touched");
  t.match(reports, [/replaced their directory/]);
});

const member = (name: string, size = 10): ArMemberRef => ({ name, size, offset: 0, path: "x.deb" });
const deb = (data: string, ...more: string[]) => [
  member("debian-binary", 4),
  member("control.tar.xz"),
  member(data),
  ...more.map((m) => member(m)),
];

t.test("decompresses the data member of a well-formed binary package only", async (t) => {
  t.match(debDataPlan(deb("data.tar.xz"), "2.0\n"), { member: { name: "data.tar.xz" }, argv: ["xz", "-dc", "-T0"] });
  t.match(debDataPlan(deb("data.tar.zst"), "2.0\n"), { argv: ["zstd", "-dc", "-q"] });
  t.match(debDataPlan(deb("data.tar.gz"), "2.0\n"), { argv: ["gzip", "-dc"] });
  t.match(debDataPlan(deb("data.tar"), "2.0\n"), { argv: ["cat"] });
  t.match(debDataPlan(deb("data.tar.xz", "_gpgbuilder"), "2.0\n"), { argv: ["xz", "-dc", "-T0"] });
  t.match(debDataPlan(deb("data.tar.xz"), "0.939000\n"), { refused: /format 2/ });
  t.match(debDataPlan(deb("data.tar.bz2"), "2.0\n"), { refused: /data.tar.bz2/ });
  t.match(debDataPlan(deb("data.tar.xz", "extra"), "2.0\n"), { refused: /after data/ });
  t.match(debDataPlan([member("control.tar.xz"), member("data.tar.xz")], "2.0\n"), { refused: /format 2/ });
  t.match(debDataPlan(deb("data.tar.xz").slice(0, 2), "2.0\n"), { refused: /none/ });
  t.match(debDataPlan([member("debian-binary", 4), member("data.tar.xz")], "2.0\n"), { refused: /control/ });
  t.match(debDataPlan([...deb("data.tar.xz").slice(0, 2), member("data.tar.xz", 0)], "2.0\n"), { refused: /empty/ });
});

t.test("a .deb's data comes back as the bytes dpkg-deb --fsys-tarfile writes", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-host-tools-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const served = join(dir, "served");
  await mkdir(served);
  const reports: string[] = [];
  const server = await serveHostTools(served, V, { zstd: "zstd", intervalMs: 5, report: (m) => reports.push(m) });
  t.teardown(() => server.stop());
  let n = 0;
  for (const compression of ["xz", "zstd", "gzip", "none"]) {
    const file = await buildDeb(dir, compression);
    const id = `deb-${++n}`;
    await copyFile(file, join(served, `${id}.in`));
    await writeFile(join(served, `${id}.req.tmp`), `name ${compression}.deb\n`);
    await rename(join(served, `${id}.req.tmp`), join(served, `${id}.req`));
    await waitFor(join(served, `${id}.done`));
    const expected = (await execa("dpkg-deb", ["--fsys-tarfile", file], { encoding: "buffer" })).stdout;
    t.ok(Buffer.compare(await readFile(join(served, `${id}.out`)), Buffer.from(expected)) === 0, compression);
  }
  t.match(reports, [/xz\.deb \(data\.tar\.xz/, /zstd\.deb/, /gzip\.deb/, /none\.deb \(data\.tar,/]);

  // Not a package: refused, and the guest's dpkg-deb says what is wrong with it.
  await writeFile(join(served, "deb-9.in"), "not an archive");
  await writeFile(join(served, "deb-9.req"), "");
  await waitFor(join(served, "deb-9.fail"));
  t.match(await readFile(join(served, "deb-9.fail"), "utf8"), /not an ar archive/);
});
