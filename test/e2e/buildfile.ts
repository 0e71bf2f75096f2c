// End to end: `vmdib build -f FILE` builds a YAML build file's images in one helper VM — each with its own elements,
// types and environment, none seeing the one before it — stops at the first failing image, and plans with --dry-run.
import { randomUUID } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t, { type Test } from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
// sfdisk and debugfs live in sbin, which a normal user's PATH may lack.
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

async function workDir(t: Test, name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `vmdib-e2e-${name}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** vmdib build in `dir` with the fixture elements; never rejects. */
function vmdib(dir: string, args: string[]) {
  return execa(VMDIB, ["build", ...args], {
    cwd: dir,
    env: { ELEMENTS_PATH: ELEMENTS, PATH },
    reject: false,
    all: true,
  });
}

// Image a writes a value only it knows into its tree (on the image disk); image b, built next on the same disk, must
// hold none of its bytes and none of its environment.
const marker = `vmdib-buildfile-${randomUUID()}`;
const TWO_IMAGES = `# two images, one helper VM
- imagename: out/a
  elements: [tiny-os, tiny-hostile]
  skip-base: true
  types: [tar]
  environment:
    DIB_HOSTILE: ${marker}
    DIB_HOSTILE_LOG: hello from a
- imagename: out/b
  elements: [tiny-os, block-device-mbr, manifests]
  skip-base: true
  types: [raw]
  checksum: true
`;

t.test("--dry-run prints every image's plan and builds nothing", async (t) => {
  const dir = await workDir(t, "buildfile-dry");
  await writeFile(join(dir, "images.yaml"), TWO_IMAGES);
  const run = await vmdib(dir, ["-f", "images.yaml", "--dry-run"]);
  t.equal(run.exitCode, 0, run.all);
  t.match(run.stdout, /^== image 1 of 2: images\.yaml entry 1 \(line 2, imagename 'out\/a'\)$/m);
  t.match(run.stdout, /^== image 2 of 2: images\.yaml entry 2 \(line 9, imagename 'out\/b'\)$/m);
  t.match(
    run.stdout,
    /Build plan for out\/a [\s\S]*out\/a\.tar[\s\S]*Build plan for out\/b [\s\S]*out\/b\.raw\.sha256/,
  );
  t.notOk(await exists(join(dir, "out")), "nothing made");
  const json = await vmdib(dir, ["-f", "images.yaml", "--dry-run", "--json"]);
  const images = JSON.parse(json.stdout).images;
  t.same(
    images.map((i: { plan: { imageName: string; outputs: { type: string }[] } }) => [
      i.plan.imageName,
      i.plan.outputs.map((o) => o.type),
    ]),
    [
      ["out/a", ["tar"]],
      ["out/b", ["raw"]],
    ],
  );
});

t.test("two images in one helper VM: each as its entry says, neither sees the other", async (t) => {
  const dir = await workDir(t, "buildfile");
  await writeFile(join(dir, "images.yaml"), TWO_IMAGES);
  const run = await vmdib(dir, ["-f", "images.yaml", "--json"]);
  t.equal(run.exitCode, 0, "exit 0");
  if (run.exitCode !== 0) return t.comment(run.all?.split("\n").slice(-30).join("\n"));
  const events = run.stdout.split("\n").flatMap((l) => (l.startsWith("{") ? [JSON.parse(l)] : []));
  const ups = events.filter((e) => e.type === "info" && /^helper VM up: QEMU pid/.test(e.message));
  t.equal(ups.length, 1, "one helper VM started");
  const summary = events.find((e) => e.type === "images");
  t.match(summary?.images, [
    { name: "out/a", status: "built", outputs: [{ path: join(dir, "out", "a.tar") }] },
    { name: "out/b", status: "built", outputs: [{ path: join(dir, "out", "b.raw") }] },
  ]);
  t.ok(summary?.images[0].qemuPid > 0, "a QEMU pid");
  t.equal(summary?.images[1].qemuPid, summary?.images[0].qemuPid, "both images built by the same QEMU");

  const a = (await execa("tar", ["xOf", join(dir, "out", "a.tar"), "./etc/vmdib-hostile"])).stdout;
  t.equal(a, marker, "image a holds its entry's environment value");

  const raw = join(dir, "out", "b.raw");
  const table = JSON.parse((await execa("sfdisk", ["--json", raw], { env: { PATH } })).stdout).partitiontable;
  t.equal(table.label, "dos", "image b: its own block-device-mbr");
  const part = join(dir, "root.img");
  await execa("dd", [`if=${raw}`, `of=${part}`, "bs=512", `skip=${table.partitions[0].start}`, "status=none"]);
  const tiny = (await execa("debugfs", ["-R", "cat /etc/vmdib-tiny", part], { env: { PATH } })).stdout;
  t.match(tiny, /element=block-device-mbr manifests tiny-os/, "image b's install.d saw its own elements");
  const hostile = await execa("debugfs", ["-R", "stat /etc/vmdib-hostile", part], { env: { PATH }, all: true });
  t.match(hostile.all, /not found/, "image a's file is not in image b");
  const grep = await execa("grep", ["-c", "-a", "-F", marker, raw], { reject: false });
  t.equal(grep.stdout, "0", "no block of image b holds image a's bytes (the image disk was emptied)");
  const env = await readFile(join(dir, "out", "b.d", "dib-manifests", "dib_environment"), "utf8");
  t.notMatch(env, /DIB_HOSTILE/, "image a's environment did not reach image b");
  t.ok(await exists(`${raw}.sha256`), "checksum: true wrote the checksum files");
});

t.test("the first failing image stops the run: named, earlier images kept, its older output kept", async (t) => {
  const dir = await workDir(t, "buildfile-fail");
  await writeFile(
    join(dir, "images.yaml"),
    // out/ok is image a of the test before: its tree comes from the tree cache.
    `- imagename: out/ok
  elements: [tiny-os, tiny-hostile]
  skip-base: true
  types: [tar]
  environment:
    DIB_HOSTILE: ${marker}
    DIB_HOSTILE_LOG: hello from a
- imagename: out/bad
  elements: [tiny-os, tiny-fail]
  skip-base: true
- imagename: out/never
  elements: [tiny-os]
  skip-base: true
  types: [tar]
`,
  );
  await mkdir(join(dir, "out"));
  await writeFile(join(dir, "out", "bad.qcow2"), "an older image\n");
  const run = await vmdib(dir, ["-f", "images.yaml"]);
  t.equal(run.exitCode, 1, "exit 1");
  if (run.exitCode !== 1) t.comment(run.all?.split("\n").slice(-30).join("\n"));
  t.match(
    run.stderr,
    /images\.yaml entry 2 \(line 8, imagename 'out\/bad'\): step 'install' failed .*install\.d\/60-tiny-fail, exit code 3/,
  );
  t.match(run.stderr, /not started \(the run stops at the first failure\): out\/never/);
  t.match(run.stdout, /^ {2}out\/ok +built /m);
  t.match(run.stdout, /^ {2}out\/bad +failed /m);
  t.match(run.stdout, /^ {2}out\/never +not started/m);
  t.ok(await exists(join(dir, "out", "ok.tar")), "the image built before it is kept");
  t.equal(await readFile(join(dir, "out", "bad.qcow2"), "utf8"), "an older image\n", "its older output untouched");
  t.notOk(await exists(join(dir, "out", "never.tar")), "the image after it was not built");
});
