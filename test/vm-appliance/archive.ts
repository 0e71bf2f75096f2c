// Tests src/vm/appliance/archive.ts against a local HTTP server and a test signing key (test/fixtures/appliance):
// a good index loads; a tampered or foreign-signed InRelease, a Packages or .deb that does not match its hash, a 404
// and an unreachable mirror all stop with an error naming the mirror — and leave nothing half-written in the cache.
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import { PACKAGE_ROOT } from "../../src/paths.js";
import {
  type ArchiveOptions,
  downloadVerified,
  fetchDebs,
  loadPackages,
  loadRelease,
  verifyInRelease,
} from "../../src/vm/appliance/archive.js";

const FIX = join(PACKAGE_ROOT, "test", "fixtures", "appliance");
const KEYRING = join(FIX, "test-keyring.gpg");

async function serve(
  routes: Record<string, Buffer | number>,
): Promise<{ url: string; server: Server; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? "");
    const r = routes[req.url ?? ""];
    if (r === undefined || typeof r === "number") {
      res.writeHead(typeof r === "number" ? r : 404);
      res.end();
      return;
    }
    res.writeHead(200, { "content-length": r.length });
    res.end(r);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/debian`, server, hits };
}

function opts(
  t: { teardown(fn: () => void): void },
  mirror: string,
  extra: Partial<ArchiveOptions> = {},
): ArchiveOptions {
  const cacheRoot = mkdtempSync(join(tmpdir(), "vmdib-archive-"));
  t.teardown(() => rmSync(cacheRoot, { recursive: true, force: true }));
  return { mirror, suite: "test", arch: "amd64", cacheRoot, offline: false, keyring: KEYRING, ...extra };
}

const inRelease = readFileSync(join(FIX, "InRelease"));
const packagesGz = readFileSync(join(FIX, "Packages.gz"));

t.test("verifyInRelease: good, tampered, foreign key, missing keyring", async (t) => {
  const text = await verifyInRelease(join(FIX, "InRelease"), KEYRING);
  t.match(text, /^Origin: vmdib-test/m);
  t.notMatch(text, /BEGIN PGP/, "only the signed part");
  await t.rejects(verifyInRelease(join(FIX, "InRelease.other-key"), KEYRING), /does not verify/);
  const dir = mkdtempSync(join(tmpdir(), "vmdib-sig-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tampered = join(dir, "InRelease");
  (await import("node:fs")).writeFileSync(tampered, inRelease.toString().replace("Codename: test", "Codename: evil"));
  await t.rejects(verifyInRelease(tampered, KEYRING), VmdibError);
  await t.rejects(verifyInRelease(join(FIX, "InRelease"), join(dir, "no-keyring.gpg")), /keyring .* does not exist/);
});

t.test("loadRelease + loadPackages from a mirror, then offline from the cache", async (t) => {
  const { url, server, hits } = await serve({
    "/debian/dists/test/InRelease": inRelease,
    "/debian/dists/test/main/binary-amd64/Packages.gz": packagesGz,
  });
  t.teardown(() => server.close());
  const o = opts(t, url);
  const release = await loadRelease(o);
  t.equal(release.source, "network");
  const loaded = await loadPackages(o, release);
  t.same([...loaded.index.packages.keys()].sort(), ["hello", "libc6"]);
  t.equal(loaded.packagesSha256, createHash("sha256").update(packagesGz).digest("hex"));
  const before = hits.length;
  const recent = await loadRelease(o);
  t.equal(recent.source, "cache", "a recent verified InRelease is reused");
  await loadPackages(o, recent);
  t.equal(hits.length, before, "no request when everything is cached");
  t.equal((await loadRelease({ ...o, refresh: true })).source, "network");
  server.close();
  const off = await loadRelease({ ...o, offline: true });
  t.ok((await loadPackages({ ...o, offline: true }, off)).index.packages.has("hello"), "offline works from the cache");
});

t.test("a Packages file that does not match the signed hash stops the build; nothing is cached", async (t) => {
  const { url, server } = await serve({
    "/debian/dists/test/InRelease": inRelease,
    "/debian/dists/test/main/binary-amd64/Packages.gz": Buffer.concat([packagesGz, Buffer.from("x")]),
  });
  t.teardown(() => server.close());
  const o = opts(t, url);
  const err = (await loadPackages(o, await loadRelease(o)).catch((e: unknown) => e)) as VmdibError;
  t.type(err, VmdibError);
  t.match(err.message, /checksum mismatch/);
  const files = readdirSync(join(o.cacheRoot, "index"), { recursive: true }).map(String);
  t.notOk(
    files.some((f) => f.includes("Packages")),
    "no Packages file (or temp file) left",
  );
});

t.test("a foreign-signed InRelease from the mirror is rejected and not cached", async (t) => {
  const { url, server } = await serve({
    "/debian/dists/test/InRelease": readFileSync(join(FIX, "InRelease.other-key")),
  });
  t.teardown(() => server.close());
  const o = opts(t, url);
  await t.rejects(loadRelease(o), /does not verify/);
  t.notOk(
    existsSync(join(o.cacheRoot, "index")) &&
      readdirSync(join(o.cacheRoot, "index"), { recursive: true }).some((f) => String(f).endsWith("InRelease")),
  );
});

t.test("404 and unreachable mirrors: errors name the mirror and the setting", async (t) => {
  const { url, server } = await serve({ "/debian/dists/test/InRelease": 404 });
  t.teardown(() => server.close());
  const e404 = (await loadRelease(opts(t, url)).catch((e: unknown) => e)) as VmdibError;
  t.match(e404.message, new RegExp(`${url.replace(/[/.]/g, "\\$&")} answered 404`));
  t.match(e404.hint, /DIB_DISTRIBUTION_MIRROR/);
  server.close();
  const down = (await loadRelease(opts(t, url)).catch((e: unknown) => e)) as VmdibError;
  t.match(down.message, /cannot reach the Debian mirror/);
  t.match(down.hint, /DIB_DISTRIBUTION_MIRROR/);
  const off = (await loadRelease(opts(t, url, { offline: true })).catch((e: unknown) => e)) as VmdibError;
  t.match(off.message, /--offline: no cached index/);
});

t.test("fetchDebs: verified downloads into the shared cache; a corrupted cached .deb is fetched again", async (t) => {
  const deb = Buffer.from("!<arch>\nfake deb");
  const sha256 = createHash("sha256").update(deb).digest("hex");
  const { url, server, hits } = await serve({
    "/debian/pool/x/x_1_amd64.deb": deb,
    "/debian/pool/bad.deb": Buffer.from("evil"),
  });
  t.teardown(() => server.close());
  const o = opts(t, url);
  const pkg = {
    name: "x",
    version: "1",
    architecture: "amd64",
    depends: "",
    preDepends: "",
    provides: "",
    filename: "pool/x/x_1_amd64.deb",
    sha256,
    size: deb.length,
    essential: false,
    priority: "optional",
  };
  const [got] = await fetchDebs([pkg], o);
  t.equal(readFileSync(got?.path ?? "").toString(), deb.toString());
  await fetchDebs([pkg], o);
  t.equal(hits.length, 1, "second time from the cache");
  (await import("node:fs")).writeFileSync(got?.path ?? "", "corrupted!!!!!!!");
  await fetchDebs([pkg], o);
  t.equal(hits.length, 2, "corrupted cache entry re-downloaded");
  await t.rejects(fetchDebs([pkg], { ...o, offline: true, cacheRoot: join(o.cacheRoot, "empty") }), /--offline/);
  await t.rejects(
    downloadVerified(`${url}/pool/bad.deb`, join(o.cacheRoot, "debs", "bad.deb"), { sha256 }, o),
    /checksum mismatch/,
  );
  t.same(
    readdirSync(join(o.cacheRoot, "debs")).filter((f) => f.startsWith(".") || f === "bad.deb"),
    [],
    "no partial file left",
  );
});
