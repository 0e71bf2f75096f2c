// Tests the cache side of src/vm/appliance/index.ts: damaged appliances are detected (missing, truncated, rewritten
// files), the verified stamp avoids re-hashing, listAppliances shows what is cached, keys are content-derived.
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  type ApplianceManifest,
  applianceKey,
  checkAppliance,
  listAppliances,
  pruneCache,
  resolveKernelPackage,
} from "../../src/vm/appliance/index.js";
import { parsePackages } from "../../src/vm/appliance/packages.js";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

function fakeAppliance(cache: string, key: string): string {
  const dir = join(cache, "appliance", key);
  mkdirSync(dir, { recursive: true });
  const kernel = Buffer.from("kernel image");
  const initrd = Buffer.alloc(4096, 1);
  writeFileSync(join(dir, "vmlinuz"), kernel);
  writeFileSync(join(dir, "initrd.img"), initrd);
  const manifest = {
    builderVersion: 1,
    key,
    createdAt: "2026-01-01T00:00:00.000Z",
    kernel: {
      file: "vmlinuz",
      size: kernel.length,
      sha256: sha(kernel),
      package: "linux-image-x",
      version: "1",
      release: "6.1.0-1-amd64",
    },
    initrd: { file: "initrd.img", size: initrd.length, sha256: sha(initrd), compression: "none" },
    packages: [{ name: "bash", version: "5.2-2", sha256: "00", size: 1 }],
    modules: ["virtio_ring"],
  } as unknown as ApplianceManifest;
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
  return dir;
}

t.test("checkAppliance: intact, then truncated, rewritten in place, missing", async (t) => {
  const cache = mkdtempSync(join(tmpdir(), "vmdib-cache-"));
  t.teardown(() => rmSync(cache, { recursive: true, force: true }));
  const dir = fakeAppliance(cache, "k1");
  t.ok((await checkAppliance(dir)).manifest, "intact");
  t.ok((await checkAppliance(dir)).manifest, "intact again (stamp path)");

  // Same size, different bytes, mtime restored: only a full check sees it.
  writeFileSync(join(dir, "initrd.img"), Buffer.alloc(4096, 2));
  // (Set the mtime explicitly: a rewrite within the filesystem's timestamp granularity could keep it.)
  utimesSync(join(dir, "initrd.img"), new Date(1000), new Date(1000));
  t.match(
    (await checkAppliance(dir)).problem ?? "",
    /initrd.img does not match its sha256/,
    "a changed mtime rehashes",
  );
  t.match((await checkAppliance(dir, true)).problem ?? "", /sha256/, "full check hashes");

  truncateSync(join(dir, "initrd.img"), 100);
  t.match((await checkAppliance(dir)).problem ?? "", /wrong size/);
  rmSync(join(dir, "vmlinuz"));
  t.match((await checkAppliance(dir)).problem ?? "", /vmlinuz is missing/);
  writeFileSync(join(dir, "manifest.json"), "{");
  t.match((await checkAppliance(dir)).problem ?? "", /manifest/);
});

t.test("listAppliances: newest first, damaged ones flagged, temp dirs hidden", async (t) => {
  const cache = mkdtempSync(join(tmpdir(), "vmdib-cache-"));
  t.teardown(() => rmSync(cache, { recursive: true, force: true }));
  fakeAppliance(cache, "good");
  mkdirSync(join(cache, "appliance", "broken"));
  mkdirSync(join(cache, "appliance", ".tmp-x"));
  const list = await listAppliances({ VMDIB_CACHE_DIR: cache });
  t.same(
    list.map((a) => [a.key, Boolean(a.manifest)]),
    [
      ["good", true],
      ["broken", false],
    ],
  );
  t.same(await listAppliances({ VMDIB_CACHE_DIR: join(cache, "nothing") }), []);
});

t.test("applianceKey changes with any package version, the declaration, or the init", async (t) => {
  const idx = parsePackages(
    [
      "Package: linux-image-amd64\nVersion: 1\nArchitecture: amd64\nDepends: linux-image-6.1.0-9-amd64 (= 1)\nFilename: a.deb\nSHA256: aa\n",
      "Package: linux-image-6.1.0-9-amd64\nVersion: 1\nArchitecture: amd64\nFilename: b.deb\nSHA256: bb\n",
      "Package: bash\nVersion: 5.2-2\nArchitecture: amd64\nFilename: c.deb\nSHA256: cc\n",
    ].join("\n"),
  );
  const kernel = resolveKernelPackage(idx, "linux-image-amd64");
  t.equal(kernel.name, "linux-image-6.1.0-9-amd64");
  const bash = idx.packages.get("bash");
  if (!bash) throw new Error("fixture");
  const base = { packages: [bash], kernel, yaml: "a", init: Buffer.from("i") };
  const k = applianceKey(base);
  t.match(k, /^[0-9a-f]{16}$/);
  t.equal(applianceKey(base), k);
  t.not(applianceKey({ ...base, packages: [{ ...bash, version: "5.2-3" }] }), k);
  t.not(applianceKey({ ...base, yaml: "b" }), k);
  t.not(applianceKey({ ...base, init: Buffer.from("j") }), k);
});

t.test("pruneCache keeps the newest appliances and the current one, removes stale temp files", async (t) => {
  const cache = mkdtempSync(join(tmpdir(), "vmdib-cache-"));
  t.teardown(() => rmSync(cache, { recursive: true, force: true }));
  const now = Date.now();
  const age = (path: string, ms: number) => utimesSync(path, new Date(now - ms), new Date(now - ms));
  for (const [i, key] of ["a", "b", "c", "d", "e"].entries()) age(fakeAppliance(cache, key), (i + 1) * 60_000);
  const tmpOld = join(cache, "appliance", ".tmp-old");
  const tmpNew = join(cache, "appliance", ".tmp-new");
  mkdirSync(tmpOld);
  mkdirSync(tmpNew);
  age(tmpOld, 2 * 3600_000);
  mkdirSync(join(cache, "debs"));
  const partial = join(cache, "debs", ".x.deb.1.ab.tmp");
  writeFileSync(partial, "");
  age(partial, 2 * 3600_000);
  writeFileSync(join(cache, "debs", "x.deb"), "");
  age(join(cache, "debs", "x.deb"), 100 * 3600_000);
  await pruneCache(cache, "e", now);
  const { readdirSync } = await import("node:fs");
  t.same(readdirSync(join(cache, "appliance")).sort(), [".tmp-new", "a", "b", "e"]);
  t.same(readdirSync(join(cache, "debs")), ["x.deb"]);
});
