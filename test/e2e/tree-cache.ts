// The phase-level cache end to end: a first build of the tiny-os fixture saves the tree after post-root.d; after a
// finalise.d edit the second build restores that tree straight into its mounted image (root.d … post-root.d and
// copy-root do not run), the image is as big as the first, and it has both the cached install.d output and the new
// finalise.d output.
import { randomUUID } from "node:crypto";
import { cp, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const FIXTURES = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;

t.test("a rebuild with only a finalise.d change reuses the tree and runs the later phases", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-tree-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const elements = join(dir, "elements");
  await cp(join(FIXTURES, "tiny-os"), join(elements, "tiny-os"), { recursive: true });
  // A file of this run in the element: the key is new, so the first build cannot hit an older entry.
  await writeFile(join(elements, "tiny-os", "run-id"), `${randomUUID()}\n`);
  const finalise = join(elements, "tiny-os", "finalise.d", "60-tiny-finalise-mark");
  const build = async (name: string) => {
    const run = await execa(VMDIB, ["build", "-n", "-o", `out/${name}`, "-t", "raw", "tiny-os", "block-device-mbr"], {
      cwd: dir,
      env: { ELEMENTS_PATH: elements },
      reject: false,
      all: true,
    });
    t.equal(run.exitCode, 0, run.exitCode === 0 ? `${name}: built` : run.all?.split("\n").slice(-30).join("\n"));
    return run.stdout;
  };
  /** A file of the built image's root partition (MBR, first partition at sector 2048), read with debugfs. */
  const cat = async (name: string, path: string) => {
    const part = join(dir, `${name}.part`);
    await execa("dd", [`if=${join(dir, "out", `${name}.raw`)}`, `of=${part}`, "bs=512", "skip=2048", "status=none"]);
    return (await execa("debugfs", ["-R", `cat ${path}`, part], { env: { PATH } })).stdout;
  };

  await writeFile(finalise, "#!/bin/bash\necho one >/etc/vmdib-finalise-mark\n", { mode: 0o755 });
  const first = await build("first");
  const miss = /tree cache miss ([0-9a-f]{24})/.exec(first);
  t.ok(miss, "the first build misses and says its key");
  t.match(first, /tree cache: saved [0-9a-f]{24}/);
  t.match(first, /==> root \(appliance\)/);
  t.equal(await cat("first", "/etc/vmdib-finalise-mark"), "one");

  await writeFile(finalise, "#!/bin/bash\necho two >/etc/vmdib-finalise-mark\n", { mode: 0o755 });
  const second = await build("second");
  t.match(second, new RegExp(`tree cache hit ${miss?.[1]}`), "the same key hits");
  t.notMatch(second, /==> (root|install) /, "root.d … post-root.d did not run");
  t.match(second, /==> restore-tree/);
  t.notMatch(second, /==> copy-root/, "the tree was written once, into the image");
  const size = async (name: string) => (await stat(join(dir, "out", `${name}.raw`))).size;
  t.equal(await size("second"), await size("first"), "sized from the tree size saved with it: as big as the first");
  t.match(await cat("second", "/etc/vmdib-tiny"), /element=block-device-mbr tiny-os/, "install.d's file, from cache");
  t.equal(await cat("second", "/etc/vmdib-finalise-mark"), "two", "the edited finalise.d ran");
});
