import t from "tap";
import { parseBuildArgs } from "../src/config.js";
import { buildOutputs, buildPlan, outputName, renderPlan } from "../src/plan.js";

const inputs = (argv: string[], env: NodeJS.ProcessEnv = {}) => ({
  options: parseBuildArgs(argv, env),
  elements: [
    { name: "base", path: "/usr/share/vmdib/elements/base" },
    { name: "debian-minimal", path: "/usr/share/vmdib/elements/debian-minimal" },
    { name: "mine", path: "/home/u/elements/mine" },
  ],
  hooks: {
    "root.d": [{ name: "08-debootstrap", element: "debian-minimal", path: "/x/08-debootstrap" }],
    "install.d": [{ name: "10-mine", element: "mine", path: "/home/u/elements/mine/install.d/10-mine" }],
  },
  environmentFiles: [{ name: "10-debian.bash", element: "debian-minimal", path: "/y" }],
  blockDevice: { size: "1 GiB", summary: ["image0: mbr"], layout: { label: "mbr" } },
  passEnv: { DIB_RELEASE: "bookworm" },
  version: "0.0.0-test",
});

t.test("phases come in disk-image-create's order with steps in between", async (t) => {
  const plan = buildPlan(inputs(["-p", "vim", "debian-minimal"]));
  t.same(
    plan.steps.map((s) => s.name),
    [
      "root",
      "extra-data",
      "pre-install",
      "install",
      "packages",
      "post-install",
      "post-root",
      "image-size",
      "block-device",
      "copy",
      "pre-finalise",
      "finalise",
      "cleanup",
      "outputs",
    ],
  );
  const where = Object.fromEntries(plan.steps.map((s) => [s.name, s.where]));
  t.equal(where.root, "appliance");
  t.equal(where.install, "chroot");
  t.equal(where.finalise, "chroot");
  t.equal(where.outputs, "host");
  t.equal(plan.steps.find((s) => s.name === "root")?.env.TARGET_ROOT, "/vmdib/build/mnt");
  t.equal(plan.steps.find((s) => s.name === "install")?.env.TMP_HOOKS_PATH, "/tmp/in_target.d");
  t.same(
    plan.steps.find((s) => s.name === "install")?.scripts.map((s) => s.name),
    ["10-mine"],
  );
});

t.test("no packages step without -p", async (t) => {
  const plan = buildPlan(inputs(["debian-minimal"]));
  t.notOk(plan.steps.some((s) => s.name === "packages"));
});

t.test("common environment carries DIB's variables, element shares and passed-through DIB_*", async (t) => {
  const plan = buildPlan(inputs(["-x", "--mkfs-options", "-m 0", "debian-minimal"]));
  const env = plan.environment.common;
  t.equal(env.IMAGE_ELEMENT, "base debian-minimal mine");
  t.equal(env.DIB_RELEASE, "bookworm");
  t.equal(env.DIB_DEBUG_TRACE, "1");
  t.equal(env.MKFS_OPTS, "-m 0");
  t.equal(env.ARCH, "amd64");
  t.same(JSON.parse(env.IMAGE_ELEMENT_YAML ?? ""), {
    base: "/vmdib/elements/0/base",
    "debian-minimal": "/vmdib/elements/0/debian-minimal",
    mine: "/vmdib/elements/1/mine",
  });
  t.same(plan.shares, [
    { host: "/usr/share/vmdib/elements", guest: "/vmdib/elements/0" },
    { host: "/home/u/elements", guest: "/vmdib/elements/1" },
  ]);
  t.same(Object.keys(env), Object.keys(env).sort(), "sorted, so the plan is deterministic");
});

t.test("outputs: extensions, raw last, checksums, single-type suffix stripped", async (t) => {
  const o = (argv: string[]) => parseBuildArgs([...argv, "x"], {});
  t.same(
    buildOutputs(o(["-o", "out/img", "-t", "raw,qcow2,squashfs,docker", "--checksum"])).map((x) => x.path),
    ["out/img.qcow2", "out/img.squash", "out/img.docker.tar", "out/img.raw"],
  );
  t.same(buildOutputs(o(["-o", "a", "--checksum"]))[0]?.checksums, ["a.qcow2.md5", "a.qcow2.sha256"]);
  t.equal(outputName(o(["-o", "foo.qcow2"])), "foo");
  t.equal(outputName(o(["-o", "foo.qcow2", "-t", "qcow2,tar"])), "foo.qcow2");
});

t.test("outputs: no-final-image keeps only the tree formats; docker and aci carry their reference", async (t) => {
  const o = (argv: string[]) => parseBuildArgs([...argv, "x"], {});
  const types = "qcow2,raw,vhd,tar,docker,aci";
  t.same(
    buildOutputs(o(["-o", "out/img", "-t", types]), ["base", "no-final-image"]).map((x) => x.type),
    ["tar", "docker", "aci"],
  );
  t.same(buildOutputs(o(["-t", "qcow2"]), ["no-final-image"]), [], "nothing to convert");
  const plan = buildPlan({
    ...inputs(["-o", "out/Img", "-t", "docker,aci", "x"]),
    elements: [{ name: "no-final-image", path: "/e/no-final-image" }],
  });
  t.same(
    plan.outputs.map((x) => x.reference),
    ["img:latest", "img:latest"],
    "the plan reads no-final-image from its elements",
  );
  t.equal(buildOutputs(o(["-t", "docker", "--docker-target", "me/d:1"]))[0]?.reference, "me/d:1");
  t.throws(() => buildOutputs(o(["-t", "docker", "--docker-target", "Not Valid"])), /not a valid image reference/);
});

t.test("the plan is data: JSON round trip, and a readable rendering", async (t) => {
  const plan = buildPlan(inputs(["debian-minimal"]));
  t.same(JSON.parse(JSON.stringify(plan)), plan);
  const text = renderPlan(plan);
  t.match(text, /Elements:\n\s+base\s+\/usr\/share\/vmdib\/elements\/base/);
  t.match(text, /root\s+\[appliance\]/);
  t.match(text, /08-debootstrap\s+\(debian-minimal\)/);
  t.match(text, /image\.qcow2/);
  t.match(text, /Block device:\n {2}size: 1 GiB\n {2}image0: mbr/);
});
