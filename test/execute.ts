import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t, { type Test } from "tap";
import { planBuild } from "../src/commands/build.js";
import { parseBuildArgs } from "../src/config.js";
import type { VmdibError } from "../src/errors.js";
import {
  type BuildEvent,
  BuildSession,
  bindCommands,
  convertArgv,
  dockerArchiveTarArgv,
  finishCommands,
  publishOutputs,
  type TreeCacheStep,
  treeOutputCommands,
} from "../src/execute.js";
import { PACKAGE_ROOT } from "../src/paths.js";
import { buildOutputs } from "../src/plan.js";
import { makeWorkDir } from "../src/workdir.js";

const opts = (argv: string[]) => parseBuildArgs([...argv, "x"], {});

t.test("qcow2 is compressed unless -u, whatever the -t order (a DIB defect not copied)", async (t) => {
  for (const types of ["qcow2", "tar,qcow2", "qcow2,raw", "raw,qcow2,vhd"]) {
    t.ok(convertArgv("in.raw", "out", "qcow2", opts(["-t", types])).includes("-c"), types);
    t.notOk(convertArgv("in.raw", "out", "qcow2", opts(["-u", "-t", types])).includes("-c"), `-u ${types}`);
  }
});

t.test("qemu-img formats and options", async (t) => {
  t.same(convertArgv("a.raw", "b.vhd", "vhd", opts([])), [
    "convert",
    "-U",
    "-f",
    "raw",
    "-O",
    "vpc",
    "-o",
    "force_size=on",
    "a.raw",
    "b.vhd",
  ]);
  t.same(convertArgv("a.raw", "b", "qcow2", opts(["--qemu-img-options", "compat=0.10"])), [
    "convert",
    "-U",
    "-f",
    "raw",
    "-O",
    "qcow2",
    "-c",
    "-o",
    "compat=0.10",
    "a.raw",
    "b",
  ]);
  t.equal(convertArgv("a", "b", "vmdk", opts([]))[5], "vmdk");
  t.throws(() => convertArgv("a", "b", "tar", opts([])));
});

t.test("tree outputs are made in the guest; disk formats are not", async (t) => {
  const outputs = buildOutputs(opts(["-t", "qcow2,tar,squashfs,aci,docker", "--docker-target", "me/x:1"]));
  const cmds = treeOutputCommands(outputs, "/mnt", "/out", "amd64");
  const text = cmds.join("\n");
  t.match(
    text,
    /^tar -C \/mnt -cf \/out\/tar -b 256 --numeric-owner --xattrs '--xattrs-include=\*' .*'--exclude=\.\/proc\/\*'/m,
  );
  t.match(text, /^mksquashfs \/mnt \/out\/squashfs -comp xz .* -e 'proc\/\*' -e 'sys\/\*'/m);
  t.match(text, /'--transform=s,\^\\\.,rootfs,S'/, "aci puts the tree under rootfs/");
  t.match(text, /"acKind": "ImageManifest"/, "aci gets its manifest");
  t.match(text, /"name": "me\/x"/, "named after --docker-target, without the tag");
  t.match(text, /-cf \/out\/docker-layer\.tar/, "docker's layer is a plain tar of the tree");
  t.notMatch(text, /qcow2/);
  t.same(treeOutputCommands(buildOutputs(opts(["-t", "qcow2,raw,vhd"])), "/mnt", "/out", "amd64"), []);
});

t.test("tar and tgz share one guest tar", async (t) => {
  for (const types of ["tar", "tgz", "tar,tgz", "tgz,tar"]) {
    const cmds = treeOutputCommands(buildOutputs(opts(["-t", types])), "/mnt", "/out", "amd64");
    t.equal(cmds.length, 1, types);
    t.match(cmds[0], /-cf \/out\/tar /, types);
  }
});

t.test("the docker archive is packed by the host's tar in docker save's order", async (t) => {
  const files = { configName: "c.json", config: "{}", layerName: "abc/layer.tar", manifest: "[]" };
  t.same(dockerArchiveTarArgv("/w/d", "/o/x.tar", files), [
    "-C",
    "/w/d",
    "-cf",
    "/o/x.tar",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--no-recursion",
    "manifest.json",
    "c.json",
    "abc",
    "abc/layer.tar",
  ]);
});

/** A work dir as the guest leaves it: a raw disk, out/tar and out/docker-layer.tar made from a small tree. */
async function guestLeftovers(t: Test) {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-publish-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const work = join(dir, "work");
  await mkdir(join(work, "out"), { recursive: true });
  await mkdir(join(dir, "tree", "etc"), { recursive: true });
  await writeFile(join(dir, "tree", "etc", "marker"), "hello\n");
  for (const f of ["tar", "docker-layer.tar"])
    await execa("tar", ["-C", join(dir, "tree"), "-cf", join(work, "out", f), "."]);
  const image = join(work, "image.raw");
  await writeFile(image, Buffer.alloc(1024 * 1024, 7));
  return { dir, work, image };
}

const realTools = (calls: string[][], dockerDaemon: boolean) => ({
  qemuImg: async (args: readonly string[]) => void (await execa("qemu-img", args)),
  run: async (file: string, args: readonly string[]) => {
    calls.push([file, ...args]);
    if (file !== "docker") return (await execa(file, args)).stdout;
    if (!dockerDaemon) throw new Error("Cannot connect to the Docker daemon");
    return args[0] === "version" ? "27.0.1" : "Loaded image: x:latest";
  },
});

t.test(
  "publishing: tgz from the guest's tar, a docker archive, checksums; loaded into a Docker daemon if one answers",
  async (t) => {
    const { dir, work, image } = await guestLeftovers(t);
    const options = opts(["-o", "out/img", "-t", "raw,qcow2,tar,tgz,docker", "--checksum"]);
    const calls: string[][] = [];
    const events: BuildEvent[] = [];
    const written = await publishOutputs({ outputs: buildOutputs(options), arch: "amd64" }, options, work, image, {
      ...realTools(calls, true),
      onEvent: (e) => events.push(e),
      signal: new AbortController().signal,
      cwd: dir,
    });
    t.same(
      written.map((p) => p.slice(dir.length + 1)),
      ["out/img.qcow2", "out/img.tar", "out/img.tgz", "out/img.docker.tar", "out/img.raw"],
    );
    const list = async (args: string[]) => (await execa("tar", args)).stdout;
    t.equal(await list(["tzf", join(dir, "out/img.tgz")]), await list(["tf", join(dir, "out/img.tar")]), "tgz = tar");
    t.match(
      await list(["tf", join(dir, "out/img.docker.tar")]),
      /^manifest\.json\n[0-9a-f]{64}\.json\n[0-9a-f]{64}\/\n/,
    );
    const load = calls.find((c) => c[0] === "docker" && c[1] === "load");
    t.match(load?.[3], /img\.docker\.tar\.vmdib-partial-\d+$/, "docker load reads the archive before it is published");
    t.ok(events.some((e) => e.type === "info" && /img:latest loaded into the Docker daemon/.test(e.message)));
    const sha = await readFile(join(dir, "out/img.raw.sha256"), "utf8");
    const real = (await execa("sha256sum", [join(dir, "out/img.raw")])).stdout.split(" ")[0];
    t.equal(sha, `${real}  img.raw\n`, "sha256sum's format, the file name only");
    t.ok((await readFile(join(dir, "out/img.tgz.md5"), "utf8")).match(/^[0-9a-f]{32} {2}img\.tgz\n$/));
    t.same(await readdir(join(dir, "out")).then((l) => l.filter((f) => f.includes("partial"))), [], "no leftovers");
  },
);

t.test("publishing: without a Docker daemon the archive is the output; a failure keeps the older image", async (t) => {
  const { dir, work, image } = await guestLeftovers(t);
  await mkdir(join(dir, "out"));
  await writeFile(join(dir, "out", "img.qcow2"), "older\n");
  const options = opts(["-o", "out/img", "-t", "docker,qcow2,vdi"]);
  const calls: string[][] = [];
  const tools = realTools(calls, false);
  const deps = {
    ...tools,
    qemuImg: async (args: readonly string[]) => {
      if (args.includes("vdi")) throw new Error("qemu-img: no space left");
      await tools.qemuImg(args);
    },
    onEvent: () => undefined,
    signal: new AbortController().signal,
    cwd: dir,
  };
  const outputs = buildOutputs(options);
  await t.rejects(publishOutputs({ outputs, arch: "amd64" }, options, work, image, deps), /no space left/);
  t.notOk(
    calls.some((c) => c[0] === "docker" && c[1] === "load"),
    "no daemon: nothing to load into",
  );
  t.equal(await readFile(join(dir, "out", "img.qcow2"), "utf8"), "older\n", "the older image is untouched");
  t.same(await readdir(join(dir, "out")), ["img.qcow2"], "no partial files, nothing half published");
});

t.test(
  "a build's binds: its work dir and element directories, the elements read-only; finish undoes them",
  async (t) => {
    const binds = [{ from: "/vmdib/element-dirs/1", to: "/vmdib/elements/0" }];
    const [work, element] = bindCommands("/tmp/x/work/vmdib-build-abc", binds);
    t.equal(work, "mkdir -p /vmdib/work && mount --bind /vmdib/session/vmdib-build-abc /vmdib/work");
    t.match(element, /mount --bind \/vmdib\/element-dirs\/1 \/vmdib\/elements\/0 && mount -o remount,bind,ro /);
    const finish = finishCommands(binds).join("\n");
    t.match(finish, /losetup -d/, "loop devices a legacy hook left on the image disk are detached");
    t.match(finish, /sync\nblockdev --flushbufs "\$disk"/, "writes reach the host file; the disk's cache is dropped");
    t.match(finish, /umount --recursive \/vmdib\/build\numount \/vmdib\/elements\/0\numount \/vmdib\/work$/);
  },
);

t.test("a session: one machine for two builds, the image disk emptied between them; a failure ends it", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-session-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { ELEMENTS_PATH: join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements") };
  const plan = async (name: string, ...elements: string[]) => {
    const options = parseBuildArgs(["-n", "-o", `out/${name}`, "-t", "raw", "tiny-os", ...elements], env);
    return { options, ...(await planBuild(options, { env, cwd: dir })) };
  };
  const images = [await plan("a"), await plan("b", "block-device-mbr"), await plan("c")];
  let starts = 0;
  let stops = 0;
  let disk = "";
  const scripts: string[] = [];
  /** What the second build's guest would read where the first one wrote. */
  let seenBySecond: Buffer | undefined;
  let sizeForSecond = 0;
  let failOn: string | undefined;
  const session = new BuildSession(
    join(dir, "session"),
    images.map((i) => i.plan),
    async (req) => {
      starts++;
      disk = req.imageDisk.path;
      t.same(
        req.elementShares.map((s) => s.guest),
        ["/vmdib/element-dirs/0", "/vmdib/element-dirs/1"],
      );
      return {
        exec: async (argv, io) => {
          const line = argv.join(" ");
          scripts.push(line);
          if (argv[0] === "test") return 1;
          if (failOn && line.includes(failOn)) return 3;
          if (line.includes("mount --bind") && scripts.filter((s) => s.includes("mount --bind")).length === 2) {
            const fh = await open(disk, "r");
            seenBySecond = Buffer.alloc(5);
            await fh.read(seenBySecond, 0, 5, 4096);
            sizeForSecond = (await fh.stat()).size;
            await fh.close();
          }
          // The guest writes the image through the disk.
          if (line.includes("copy-root")) {
            const fh = await open(disk, "r+");
            await fh.write("image", 4096);
            await fh.close();
          }
          io.stdout.write("VMDIB_BUILT_KIB=2048\n");
          return 0;
        },
        stop: async () => void stops++,
      };
    },
  );
  const deps = {
    cwd: dir,
    signal: new AbortController().signal,
    onEvent: () => undefined,
    qemuImg: async (args: readonly string[]) => writeFile(args[args.length - 1] as string, "converted"),
  };
  await mkdir(session.workRoot, { recursive: true });
  for (const image of images.slice(0, 2)) {
    const workDir = await makeWorkDir(image.plan, session.workRoot);
    await session.build(image.plan, image.options, image.config, workDir, deps);
  }
  t.equal(starts, 1, "one machine for both builds");
  t.same(seenBySecond, Buffer.alloc(5), "the second build's disk reads zeros where the first one wrote");
  t.equal(sizeForSecond, 2 * 1024 ** 4, "at its full capacity again");
  const prepares = scripts.filter((s) => s.includes("mount -t tmpfs"));
  t.notMatch(prepares[0], /flushbufs/, "the first build's disk is new");
  t.match(prepares[1], /blockdev --flushbufs "\$disk"; blockdev --rereadpt/, "the second's guest drops its cache");
  t.equal(scripts.filter((s) => s.includes("umount --recursive /vmdib/build")).length, 2, "each build finished");
  t.equal(await readFile(join(dir, "out", "b.raw"), "utf8"), "converted", "both published");

  failOn = " install";
  const c = images[2] as (typeof images)[number];
  await t.rejects(
    session.build(c.plan, c.options, c.config, await makeWorkDir(c.plan, session.workRoot), deps),
    /step 'install' failed with exit code 3/,
  );
  await t.rejects(
    session.build(c.plan, c.options, c.config, await makeWorkDir(c.plan, session.workRoot), deps),
    /a build failed in this session/,
  );
  await session.close();
  t.equal(stops, 1);
});

t.test("mke2fs refusing the journal: the sizes and the two options, not a bare exit code", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-journal-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { ELEMENTS_PATH: join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements") };
  const options = parseBuildArgs(["-n", "-o", "out/j", "--image-size", "100M", "tiny-os"], env);
  const { plan, config } = await planBuild(options, { env, cwd: dir });
  const session = new BuildSession(join(dir, "session"), [plan], async () => ({
    exec: async (argv, io) => {
      if (argv[0] === "test") return 1;
      if (argv.join(" ").includes("blockdev-setup")) {
        io.stderr.write("mke2fs 1.47.0 (5-Feb-2023)\n\nTotal journal size too big for filesystem.\n");
        return 1;
      }
      io.stdout.write("VMDIB_BUILT_KIB=2048\n");
      return 0;
    },
    stop: async () => undefined,
  }));
  await mkdir(session.workRoot, { recursive: true });
  const deps = { cwd: dir, signal: new AbortController().signal, onEvent: () => undefined, qemuImg: async () => {} };
  const err = await session
    .build(plan, options, config, await makeWorkDir(plan, session.workRoot), deps)
    .catch((e: unknown) => e as VmdibError);
  t.match(err, { message: /too small for its 64 MiB ext4 journal/, hint: /--image-size.*--mkfs-journal-size/ });
  await session.close();
});

/** One build of the tiny-os fixture with a fake machine that records each step; `legacy`: a block-device.d hook set IMAGE_BLOCK_DEVICE. */
async function recordSteps(t: Test, extra: string[], treeCache: TreeCacheStep, legacy = false) {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-tree-steps-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { ELEMENTS_PATH: join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements") };
  const options = parseBuildArgs(["-n", "-o", "out/w", "-t", "raw", "tiny-os", ...extra], env);
  const { plan, config } = await planBuild(options, { env, cwd: dir });
  const steps: { step: string; line: string }[] = [];
  const events: BuildEvent[] = [];
  const session = new BuildSession(join(dir, "session"), [plan], async () => ({
    exec: async (argv, io) => {
      if (argv[0] === "test") return legacy ? 0 : 1;
      const line = argv.join(" ");
      const script = /\/vmdib\/work\/([a-z-]+)\.sh$/.exec(line)?.[1];
      // run-phase steps by name, generated scripts by file; the tree cache's tar lines by what they do.
      const tar = line.includes(" -xpf ")
        ? "restore-tree"
        : line.includes(" -cf /vmdib/trees/")
          ? "save-tree"
          : undefined;
      steps.push({ step: script ?? tar ?? argv[3] ?? line, line });
      if (line.includes("stash-root")) io.stdout.write("VMDIB_BUILT_KIB=4096\n");
      return 0;
    },
    stop: async () => undefined,
  }));
  await mkdir(session.workRoot, { recursive: true });
  const deps = {
    cwd: dir,
    signal: new AbortController().signal,
    onEvent: (e: BuildEvent) => void events.push(e),
    qemuImg: async (args: readonly string[]) => writeFile(args[args.length - 1] as string, "converted"),
    treeCache,
  };
  const workDir = await makeWorkDir(plan, session.workRoot);
  await session.build(plan, options, config, workDir, deps);
  await session.close();
  const read = (name: string) => readFile(join(workDir, `${name}.sh`), "utf8").catch(() => "");
  return { steps, events, fstab: await read("fstab"), setup: await read("blockdev-setup") };
}

const sizeInfo = (events: BuildEvent[]) =>
  events.map((e) => (e.type === "info" ? e.message : "")).find((m) => m.startsWith("image size"));

t.test("a tree cache hit: the saved tree is extracted once, straight into the mounted image", async (t) => {
  const file = "/vmdib/trees/0123456789abcdef01234567.tar";
  const { steps, events, fstab } = await recordSteps(t, ["block-device-mbr"], {
    restore: { file, builtKib: 4096 },
    commit: async () => {
      t.fail("a hit saves nothing");
    },
  });
  const names = steps.map((s) => s.step).filter((s) => !/^(bash|mkdir)/.test(s));
  t.same(
    names.slice(names.indexOf("init")),
    [
      "init",
      "block-device",
      "blockdev-setup",
      "restore-tree",
      "fstab",
      "pre-finalise",
      "finalise",
      "cleanup",
      "unmount",
      "blockdev-umount",
    ],
    "no root.d … post-root.d, no copy-root: the tree is restored after the image is mounted",
  );
  const restore = steps.find((s) => s.step === "restore-tree")?.line ?? "";
  t.match(restore, `tar -C /vmdib/build -b 256 -xpf ${file}`);
  t.match(restore, "--transform='s,^\\./built\\(/\\|$\\),./mnt\\1,S'", "./built lands in mnt/, the image");
  t.match(fstab, "> /vmdib/build/mnt/etc/fstab", "the fstab goes into the image, over the tree's");
  t.match(sizeInfo(events), "(tree 4096 KiB)", "the image is sized from the saved tree's recorded size");
});

t.test("a miss: stash-root's size is committed with the tree; the tree is copied by copy-root", async (t) => {
  let committed: number | undefined;
  const { steps, events, fstab } = await recordSteps(t, ["block-device-mbr"], {
    saveTo: "/vmdib/trees/x.tar.partial-1",
    commit: async (kib) => {
      committed = kib;
    },
  });
  const names = steps.map((s) => s.step);
  t.ok(names.indexOf("save-tree") > names.indexOf("stash-root"), "saved after stash-root");
  t.ok(names.indexOf("copy-root") > names.indexOf("fstab"), "copy-root after the fstab");
  t.notOk(names.includes("restore-tree"));
  t.equal(committed, 4096, "the size the image was made from is stored with the tree");
  t.match(fstab, "> /vmdib/build/built/etc/fstab");
  t.match(sizeInfo(events), "(tree 4096 KiB)");
});

t.test("a hit with a legacy block-device.d hook: the tree goes back to built/ and copy-root copies it", async (t) => {
  const { steps } = await recordSteps(
    t,
    [],
    { restore: { file: "/vmdib/trees/t.tar", builtKib: 4096 }, commit: async () => {} },
    true,
  );
  const names = steps.map((s) => s.step);
  const restore = steps.find((s) => s.step === "restore-tree")?.line ?? "";
  t.notMatch(restore, "--transform", "extracted where it was saved from");
  t.ok(names.indexOf("restore-tree") > names.indexOf("block-device"), "after the hook made its device");
  t.equal(names.indexOf("copy-root"), names.indexOf("restore-tree") + 1, "then copied onto it");
  t.notOk(names.includes("blockdev-setup"), "the layout is skipped");
});
