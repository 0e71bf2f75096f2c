// Faults caused for real in a build: the build tree fills up. The error says which space ran out, how much was used,
// and the option that gives more; the image already at -o is untouched.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

t.test("the build tree fills up: 'build space exhausted', the size used, and --memory", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-faults-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, "out"));
  await writeFile(join(dir, "out", "full.raw"), "the older image\n");
  // A small helper VM: its tmpfs tree fills after a few hundred MB.
  const run = await execa(
    VMDIB,
    ["build", "-n", "--memory", "1024", "-o", "out/full", "-t", "raw", "tiny-os", "tiny-fill"],
    { cwd: dir, env: { ELEMENTS_PATH: ELEMENTS }, reject: false, all: true },
  );
  t.equal(run.exitCode, 1, "exit 1");
  t.match(
    run.stderr,
    /build space exhausted: the build tree in the helper VM's memory is full \(\d+ MiB used of \d+ MiB\)/,
  );
  t.match(run.stderr, /hint: .*--memory \(now 1024 MB\)/);
  t.notMatch(run.stderr, /\n\s+at /, "no stack trace");
  t.equal(await readFile(join(dir, "out", "full.raw"), "utf8"), "the older image\n", "the older image is untouched");
});
