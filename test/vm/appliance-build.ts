// End to end against the real mirror: `ensureAppliance` builds (or reuses) the appliance in the user's cache; a second
// call and an --offline call reuse it; the initramfs holds what the guest relies on. Slow once, then cache hits.
import { readFileSync } from "node:fs";
import t from "tap";
import { GUEST_DIR } from "../../src/paths.js";
import { parseCpio, S_IFLNK, S_IFMT, S_IFREG } from "../../src/vm/appliance/cpio.js";
import { type ApplianceEvent, ensureAppliance, listAppliances } from "../../src/vm/appliance/index.js";
import { searchKmodIndex } from "../../src/vm/appliance/modules.js";
import { loadApplianceSpec } from "../../src/vm/appliance/spec.js";

t.test("appliance build, reuse, offline reuse, contents", async (t) => {
  const events: ApplianceEvent[] = [];
  const first = await ensureAppliance({
    env: process.env,
    offline: false,
    refresh: true,
    onEvent: (e) => events.push(e),
  });
  t.ok(
    events.some((e) => e.type === "index" && e.source === "network"),
    "index fetched and verified",
  );
  t.match(first.manifest.kernel.release, /-amd64$/);
  t.notMatch(first.manifest.kernel.release, /cloud/, "the generic flavour (it has 9p)");
  t.ok(first.manifest.packages.length > 50);
  t.ok(first.manifest.modules.includes("crc32c_generic"), "ext4's soft dependency is in");

  const second = await ensureAppliance({ env: process.env, offline: false });
  t.equal(second.key, first.key);
  t.ok(second.reused, "second build reuses the cache");
  const offline = await ensureAppliance({ env: process.env, offline: true });
  t.equal(offline.key, first.key);
  t.ok(offline.reused, "offline build reuses the cache");
  t.ok((await listAppliances(process.env)).some((a) => a.key === first.key && a.manifest));

  const entries = parseCpio(readFileSync(first.initrd));
  const by = new Map(entries.map((e) => [e.name, e]));
  t.equal(by.get("init")?.mode, S_IFREG | 0o755, "/init is executable");
  t.equal((by.get("usr/bin/sudo")?.mode ?? 0) & 0o7777, 0o4755, "sudo keeps its setuid bit");
  t.equal((by.get("bin")?.mode ?? 0) & S_IFMT, S_IFLNK, "merged /usr");
  t.ok(
    entries.every((e) => e.uid === 0),
    "all root-owned",
  );
  t.ok(by.has("usr/sbin/sshd") && by.has("usr/lib/openssh/sftp-server"));
  t.ok(by.has("usr/bin/python3") && by.has("usr/sbin/mkfs.ext4") && by.has("usr/sbin/grub-install"));
  t.notOk([...by.keys()].some((n) => n.startsWith("usr/share/doc/") || n.startsWith("usr/share/man/")));
  const modDir = `usr/lib/modules/${first.manifest.kernel.release}`;
  const depBin = by.get(`${modDir}/modules.dep.bin`)?.data;
  t.ok(depBin && searchKmodIndex(depBin, "ext4").length === 1, "modprobe can find ext4");
  const aliasBin = by.get(`${modDir}/modules.alias.bin`)?.data;
  t.ok(aliasBin && searchKmodIndex(aliasBin, "fs_ext4").length === 1, "the kernel's request for fs-ext4 resolves");
  const shipped = first.manifest.modules;
  t.ok(shipped.indexOf("virtio_ring") < shipped.indexOf("virtio_pci"), "load order: virtio_ring first");
  const preload = by.get("etc/vmdib/modules")?.data.toString().trim().split("\n") ?? [];
  t.same(preload, loadApplianceSpec(GUEST_DIR).preload, "the init preloads appliance.yaml's preload list only");
  t.ok(
    preload.every((m) => shipped.includes(m)),
    "every preloaded module is shipped",
  );
});
