// Tests the dpkg element's use of the host's tools on the host: root.d/52-host-dpkg-deb writes the dpkg-deb shim and
// apt's DPkg::Path, the shim's answers equal the real dpkg-deb's (served by src/host-tools.ts), and
// cleanup.d/60-untrim-dpkg takes back only what 52 wrote.
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t, { type Test } from "tap";
import { serveHostTools } from "../../src/host-tools.js";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";
import { buildDeb } from "../helpers/deb.js";

const DPKG = join(BUILTIN_ELEMENTS_DIR, "dpkg");

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-dpkg-shim-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A target root with a dpkg-deb to shadow, after 52-host-dpkg-deb ran in it (no host tools to bind). */
async function rootWithShim(t: Test): Promise<string> {
  const root = join(await tempDir(t), "root");
  await mkdir(join(root, "usr/bin"), { recursive: true });
  await writeFile(join(root, "usr/bin/dpkg-deb"), "#!/bin/sh\n");
  await chmod(join(root, "usr/bin/dpkg-deb"), 0o755);
  await execa(join(DPKG, "root.d/52-host-dpkg-deb"), { env: { TARGET_ROOT: root, VMDIB_HOST_TOOLS: "" } });
  return root;
}

t.test("root.d writes the shim and apt's PATH for dpkg; cleanup.d removes them, and only them", async (t) => {
  const root = await rootWithShim(t);
  const shim = await readFile(join(root, "usr/local/sbin/dpkg-deb"), "utf8");
  t.match(shim, /^#!\/bin\/sh\n# vmdib build-time shim/);
  t.match(
    await readFile(join(root, "etc/apt/apt.conf.d/00vmdib-dpkg-path"), "utf8"),
    /DPkg::Path "\/usr\/local\/sbin:/,
  );

  await execa(join(DPKG, "cleanup.d/60-untrim-dpkg"), { env: { TARGET_ROOT: root } });
  t.same(await readdir(join(root, "usr/local/sbin")), []);
  t.same(await readdir(join(root, "etc/apt/apt.conf.d")), []);

  // An element's own dpkg-deb there is not ours to take, nor to overwrite.
  await writeFile(join(root, "usr/local/sbin/dpkg-deb"), "#!/bin/sh\n# mine\n");
  await execa(join(DPKG, "root.d/52-host-dpkg-deb"), { env: { TARGET_ROOT: root, VMDIB_HOST_TOOLS: "" } });
  await execa(join(DPKG, "cleanup.d/60-untrim-dpkg"), { env: { TARGET_ROOT: root } });
  t.equal(await readFile(join(root, "usr/local/sbin/dpkg-deb"), "utf8"), "#!/bin/sh\n# mine\n");
});

t.test("the shim: a large .deb's data from the host, everything else from the real dpkg-deb", async (t) => {
  const work = await tempDir(t);
  // The shim as written, pointed at a served directory of this test instead of the chroot's /tmp/vmdib-host-tools.
  const served = join(work, "host-tools");
  await mkdir(served);
  const shimText = await readFile(join(await rootWithShim(t), "usr/local/sbin/dpkg-deb"), "utf8");
  t.match(shimText, /^dir=\/tmp\/vmdib-host-tools$/m);
  const shim = join(work, "dpkg-deb");
  await writeFile(shim, shimText.replace(/^dir=.*$/m, `dir=${served}`), { mode: 0o755 });
  const reports: string[] = [];
  const server = await serveHostTools(served, "zstd v0", {
    zstd: "zstd",
    intervalMs: 20,
    report: (m) => reports.push(m),
  });
  t.teardown(() => server.stop());

  // apt hands dpkg links to the archives when it unpacks many packages at once.
  const large = join(work, "12-large.deb");
  await symlink(await buildDeb(work, "xz", 600_000), large);
  const small = await buildDeb(work, "xz", 1000);
  const tarOf = async (argv: string[]) =>
    (await execa(argv[0] as string, argv.slice(1), { encoding: "buffer" })).stdout;
  for (const deb of [large, small]) {
    const got = Buffer.from(await tarOf([shim, "--fsys-tarfile", deb]));
    const want = Buffer.from(await tarOf(["dpkg-deb", "--fsys-tarfile", deb]));
    t.ok(got.equals(want), `the same tar for ${deb === large ? "the large" : "the small"} .deb`);
  }
  t.equal(reports.length, 1, "only the large one went to the host");
  t.match(reports[0], /dpkg-deb --fsys-tarfile 12-large\.deb \(data\.tar\.xz, 0\.6 MB\) run on the host/);
  t.same(await readdir(served), ["client"], "the shim leaves nothing behind but the server's client");
  t.equal((await execa(shim, ["-f", large, "Package"])).stdout, "vmdib-test", "other calls pass through");

  // A file the host refuses: the real dpkg-deb says what is wrong with it, and the shim fails as it does.
  const broken = join(work, "broken.deb");
  await writeFile(broken, Buffer.alloc(600_000, 1));
  const r = await execa(shim, ["--fsys-tarfile", broken], { reject: false });
  t.not(r.exitCode, 0);
  t.match(r.stderr, /vmdib: broken\.deb: not an ar archive.*; running it in the helper VM/);
  t.match(r.stderr, /dpkg-deb: error/);
  t.same(await readdir(served), ["client"], "nothing left behind after a refusal either");
});
