import t from "tap";
import { parseBuildArgs } from "../src/config.js";
import { convertArgv, dockerArchiveTarArgv, treeOutputCommands } from "../src/execute.js";
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
    "force_size=on",
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
  const cmds = treeOutputCommands(outputs, "/mnt", "/out", "amd64");
  const text = cmds.join("\n");
  t.match(
    text,
    /^tar -C \/mnt -cf \/out\/tar --numeric-owner --xattrs '--xattrs-include=\*' .*'--exclude=\.\/proc\/\*'/m,
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
