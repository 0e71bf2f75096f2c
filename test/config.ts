import t from "tap";
import { buildHelp, parseBuildArgs, SETTINGS } from "../src/config.js";
import { UsageError } from "../src/errors.js";

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseBuildArgs(argv, env);

t.test("defaults match disk-image-create", async (t) => {
  const o = parse(["vm", "debian-minimal"]);
  t.same(o.elements, ["vm", "debian-minimal"]);
  t.equal(o.imageName, "image");
  t.same(o.types, ["qcow2"]);
  t.equal(o.compress, true);
  t.equal(o.fsType, "ext4");
  t.equal(o.journalSizeMb, 64);
  t.equal(o.minTmpfsGb, 2);
  t.equal(o.installType, "source");
  t.equal(o.skipBase, false);
});

t.test("every disk-image-create flag is accepted with DIB's meaning", async (t) => {
  const o = parse([
    "-o",
    "out/img",
    "-t",
    "qcow2,tar",
    "-a",
    "arm64",
    "-x",
    "-x",
    "-u",
    "-c",
    "-n",
    "-p",
    "vim,curl",
    "-p",
    "htop",
    "--checksum",
    "--image-size",
    "3",
    "--image-extra-size=0.5",
    "--image-cache",
    "/tmp/c",
    "--max-online-resize",
    "274877906944",
    "--min-tmpfs",
    "4",
    "--mkfs-journal-size",
    "32",
    "--mkfs-options",
    "-O ^has_journal",
    "--no-tmpfs",
    "--offline",
    "--qemu-img-options",
    "compat=1.1",
    "--root-label",
    "root",
    "--install-type",
    "package",
    "--docker-target",
    "me/img:1",
    "--logfile",
    "/tmp/log",
    "vm",
    "debian-minimal",
  ]);
  t.equal(o.imageName, "out/img");
  t.same(o.types, ["qcow2", "tar"]);
  t.equal(o.arch, "arm64");
  t.equal(o.trace, 2);
  t.equal(o.compress, false);
  t.equal(o.clearEnv, true);
  t.equal(o.skipBase, true);
  t.same(o.packages, ["vim", "curl", "htop"]);
  t.equal(o.checksum, true);
  t.equal(o.imageSize, 3 * 1024 ** 3);
  t.equal(o.imageExtraSize, 0.5 * 1024 ** 3);
  t.equal(o.imageCache, "/tmp/c");
  t.equal(o.maxOnlineResize, 274877906944);
  t.equal(o.minTmpfsGb, 4);
  t.equal(o.journalSizeMb, 32);
  t.equal(o.mkfsOptions, "-O ^has_journal");
  t.equal(o.noTmpfs, true);
  t.equal(o.offline, true);
  t.equal(o.qemuImgOptions, "compat=1.1");
  t.equal(o.rootLabel, "root");
  t.equal(o.installType, "package");
  t.equal(o.dockerTarget, "me/img:1");
  t.equal(o.logfile, "/tmp/log");
  t.same(o.elements, ["vm", "debian-minimal"]);
});

t.test("bundled short flags, attached values, options after elements, --", async (t) => {
  const o = parse(["vm", "-xun", "-oout", "debian-minimal", "--", "-weird-element"]);
  t.equal(o.trace, 1);
  t.equal(o.compress, false);
  t.equal(o.skipBase, true);
  t.equal(o.imageName, "out");
  t.same(o.elements, ["vm", "debian-minimal", "-weird-element"]);
});

t.test("DIB environment variables are honoured; flags win", async (t) => {
  const env = {
    MKFS_OPTS: "-m 0",
    DIB_IMAGE_SIZE: "5",
    DIB_CHECKSUM: "1",
    FS_TYPE: "xfs",
    ELEMENTS_PATH: "/a:/b",
    DIB_OFFLINE: "0",
    DIB_DEBUG_TRACE: "1",
  };
  const o = parse(["debian-minimal"], env);
  t.equal(o.mkfsOptions, "-m 0", "MKFS_OPTS from the environment is honoured (unlike DIB)");
  t.equal(o.imageSize, 5 * 1024 ** 3);
  t.equal(o.checksum, true);
  t.equal(o.fsType, "xfs");
  t.same(o.elementsPath, ["/a", "/b"]);
  t.equal(o.offline, false);
  t.equal(o.trace, 1);
  t.equal(parse(["--image-size", "2", "x"], env).imageSize, 2 * 1024 ** 3);
  t.equal(parse(["--mkfs-options", "-q", "x"], env).mkfsOptions, "-q");
  t.equal(parse(["-c", "x"], env).mkfsOptions, "", "-c ignores the environment");
});

t.test("--image-extra-size and --mkfs-journal-size work as flags (a DIB defect not copied)", async (t) => {
  const o = parse(["--image-extra-size", "1", "--mkfs-journal-size", "16", "x"]);
  t.equal(o.imageExtraSize, 1024 ** 3);
  t.equal(o.journalSizeMb, 16);
});

t.test("bad input is a UsageError (exit 2) that says what and where", async (t) => {
  const bad: [string[], RegExp][] = [
    [["-t", "qcow3", "x"], /unknown image type 'qcow3'/],
    [["--image-size", "0", "x"], /--image-size: '.*' is not a usable size/],
    [["--image-size", "-1", "x"], /--image-size: '.*' is not a usable size/],
    [["--image-size", "1e9", "x"], /--image-size: '.*' is not a usable size/],
    [["--image-size", "lots", "x"], /--image-size/],
    [["--frobnicate", "x"], /unknown option '--frobnicate'/],
    [["-Z", "x"], /unknown option '-Z'/],
    [["-o"], /option -o needs a value/],
    [["--accel", "warp", "x"], /unknown accelerator 'warp'/],
    [["--checksum=yes", "x"], /takes no value/],
    [[], /no elements given/],
    [["-t", ",", "x"], /names no image type/],
  ];
  for (const [argv, re] of bad) {
    t.throws(() => parse(argv), re, argv.join(" "));
    try {
      parse(argv);
    } catch (err) {
      t.ok(err instanceof UsageError && err.exitCode === 2 && err.hint, `${argv.join(" ")}: exit 2 with a hint`);
    }
  }
  t.throws(() => parse(["x"], { DIB_IMAGE_SIZE: "huge" }), /DIB_IMAGE_SIZE: 'huge' is not a usable size/);
});

t.test("help is generated from the settings table", async (t) => {
  const help = buildHelp();
  for (const s of SETTINGS) {
    if ("long" in s && s.long) t.match(help, `--${s.long}`);
    if ("short" in s && s.short) t.match(help, `-${s.short}`);
    if ("env" in s && s.env) t.match(help, s.env);
  }
});
