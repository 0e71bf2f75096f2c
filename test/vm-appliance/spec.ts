// Tests src/vm/appliance/spec.ts: appliance.yaml → ApplianceSpec, the preload list checked against the shipped
// modules, and the appliance.yaml vmdib ships.
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import { GUEST_DIR } from "../../src/paths.js";
import { loadApplianceSpec, parseApplianceSpec } from "../../src/vm/appliance/spec.js";

const yaml = (extra: string) => `suite: bookworm
kernel: linux-image-amd64
packages: [bash]
modules: [virtio_pci, loop, dm_mod, ext4]
${extra}`;

t.test("preload: optional, and a subset of modules", async (t) => {
  t.same(parseApplianceSpec(yaml("")).preload, []);
  const s = parseApplianceSpec(yaml("preload: [loop, dm_mod]\n"));
  t.same(s.preload, ["loop", "dm_mod"]);
  t.same(s.modules, ["virtio_pci", "loop", "dm_mod", "ext4"]);
  const err = t.throws(() => parseApplianceSpec(yaml("preload: [loop, btrfs]\n"))) as unknown as VmdibError;
  t.type(err, VmdibError);
  t.match(err.message, /preload names modules not in 'modules': btrfs/);
  t.throws(() => parseApplianceSpec(yaml("preload: loop\n")), /'preload' must be a list of names/);
});

t.test("the shipped appliance.yaml: loop and device-mapper preloaded, file systems left to the kernel", async (t) => {
  const s = loadApplianceSpec(GUEST_DIR);
  t.ok(s.preload.includes("loop") && s.preload.includes("dm_mod"));
  t.notOk(s.preload.includes("ext4"), "file systems load on demand");
  t.ok(s.modules.includes("ext4") && s.modules.includes("crc32c_generic"));
});
