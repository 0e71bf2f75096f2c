import t from "tap";
import { parseBuildArgs } from "../src/config.js";
import { convertArgv, treeOutputCommands } from "../src/execute.js";
import { buildOutputs } from "../src/plan.js";

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
    "-f",
    "raw",
    "-O",
    "vpc",
    "-o",
    "subformat=fixed",
    "a.raw",
    "b.vhd",
  ]);
  t.same(convertArgv("a.raw", "b", "qcow2", opts(["--qemu-img-options", "compat=0.10"])), [
    "convert",
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
  t.equal(convertArgv("a", "b", "vmdk", opts([]))[4], "vmdk");
  t.throws(() => convertArgv("a", "b", "tar", opts([])));
});

t.test("tree outputs are made in the guest; disk formats are not", async (t) => {
  const outputs = buildOutputs(opts(["-t", "qcow2,tar,squashfs,aci,docker", "--docker-target", "me/x:1"]));
  const cmds = treeOutputCommands(outputs, "/mnt", "/out").join("\n");
  t.match(cmds, /tar -C \/mnt -cf \/out\/tar .*--exclude=\.\/proc/);
  t.match(cmds, /mksquashfs \/mnt \/out\/squashfs/);
  t.match(cmds, /--transform 's,\^\\\.,rootfs,S'/, "aci puts the tree under rootfs/");
  t.match(cmds, /manifest\.json/, "docker archive has a manifest for docker/podman load");
  t.notMatch(cmds, /qcow2/);
});
