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
  type ApplianceEvent,
  type ArchiveOptions,
  downloadMeter,
  downloadVerified,
  fetchDebs,
  loadPackages,
  loadRelease,
  mirrorRequest,
  verifyInRelease,
} from "../../src/vm/appliance/archive.js";
import type { DebPackage } from "../../src/vm/appliance/packages.js";

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

t.test(
  "mirrorRequest: credentials in the URL become a Basic header, percent-escapes decoded; none, no header",
  async (t) => {
    const r = mirrorRequest("http://ci%40corp:p%3Ass%20w0rd@mirror.invalid:8080/debian/dists/x/InRelease");
    t.equal(r.url, "http://mirror.invalid:8080/debian/dists/x/InRelease");
    t.equal(r.headers.authorization, `Basic ${Buffer.from("ci@corp:p:ss w0rd").toString("base64")}`);
    t.same(mirrorRequest("http://mirror.invalid/debian"), { url: "http://mirror.invalid/debian", headers: {} });
    t.equal(mirrorRequest("http://token@mirror.invalid/d").headers.authorization, `Basic ${btoa("token:")}`);
  },
);

/** A mirror that serves `routes` only with `Authorization: Basic base64(user:password)`, 401 otherwise. */
async function serveWithAuth(routes: Record<string, Buffer>, user: string, password: string) {
  const want = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
  const seen: { url: string; authorization: string | undefined }[] = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url ?? "", authorization: req.headers.authorization });
    const body = routes[req.url ?? ""];
    if (req.headers.authorization !== want) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="test mirror"' });
      res.end();
    } else if (!body) {
      res.writeHead(404);
      res.end();
    } else {
      res.writeHead(200, { "content-length": body.length });
      res.end(body);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as AddressInfo).port, server, seen };
}

t.test("an authenticated mirror: index, Packages and a .deb fetched with the Basic header", async (t) => {
  const deb = Buffer.from("!<arch>\nfake deb");
  const { port, server, seen } = await serveWithAuth(
    {
      "/debian/dists/test/InRelease": inRelease,
      "/debian/dists/test/main/binary-amd64/Packages.gz": packagesGz,
      "/debian/pool/x/x_1_amd64.deb": deb,
    },
    "ci@corp",
    "p:ss w0rd",
  );
  t.teardown(() => server.close());
  const events: ApplianceEvent[] = [];
  const o = opts(t, `http://ci%40corp:p%3Ass%20w0rd@127.0.0.1:${port}/debian`, { onEvent: (e) => events.push(e) });
  const loaded = await loadPackages(o, await loadRelease(o));
  t.ok(loaded.index.packages.has("hello"));
  const pkg = {
    ...(loaded.index.packages.get("hello") as DebPackage),
    filename: "pool/x/x_1_amd64.deb",
    sha256: createHash("sha256").update(deb).digest("hex"),
    size: deb.length,
  };
  const [got] = await fetchDebs([pkg], o);
  t.equal(readFileSync(got?.path ?? "").toString(), deb.toString());
  t.same(
    seen.map((s) => s.url),
    [
      "/debian/dists/test/InRelease",
      "/debian/dists/test/main/binary-amd64/Packages.gz",
      "/debian/pool/x/x_1_amd64.deb",
    ],
    "every request authenticated at the first try",
  );
  t.ok(
    seen.every((s) => s.authorization?.startsWith("Basic ")),
    "the header on each",
  );
  t.notOk(JSON.stringify(events).includes("w0rd"), "no event carries the password");
  const progress = events.filter((e) => e.type === "download-progress");
  t.match(progress[0], { what: "package index", done: 0, total: packagesGz.length, files: 1, filesDone: 0 });
  t.match(progress.filter((e) => e.what === "packages").at(-1), {
    done: deb.length,
    total: deb.length,
    files: 1,
    filesDone: 1,
  });
});

t.test("downloadMeter: the first and the last report always, the ones between at most every 250 ms", async (t) => {
  const events: ApplianceEvent[] = [];
  let clock = 0;
  const meter = downloadMeter(
    "packages",
    { bytes: 300, files: 2 },
    (e) => events.push(e),
    () => clock,
  );
  for (let i = 0; i < 10; i++) {
    clock += 50;
    meter.data(20);
  }
  meter.fileDone();
  clock += 10;
  meter.data(100);
  meter.fileDone();
  t.same(
    events.map((e) => (e.type === "download-progress" ? [e.done, e.filesDone] : [])),
    [
      [0, 0],
      [100, 0],
      [200, 0],
      [300, 2],
    ],
  );
});

t.test(
  "401 from a mirror: the status, the redacted mirror, a hint about credentials; never the password",
  async (t) => {
    const { port, server } = await serveWithAuth({ "/debian/dists/test/InRelease": inRelease }, "ci", "right");
    t.teardown(() => server.close());
    const wrong = (await loadRelease(opts(t, `http://ci:wrong-s3cret@127.0.0.1:${port}/debian`)).catch(
      (e: unknown) => e,
    )) as VmdibError;
    t.type(wrong, VmdibError);
    t.equal(
      wrong.message,
      `the Debian mirror http://***@127.0.0.1:${port}/debian answered 401 Unauthorized for http://***@127.0.0.1:${port}/debian/dists/test/InRelease`,
    );
    t.match(wrong.hint, /refused the credentials/);
    t.notMatch(`${wrong.message} ${wrong.hint} ${wrong.context.join(" ")}`, /s3cret/);
    const none = (await loadRelease(opts(t, `http://127.0.0.1:${port}/debian`)).catch((e: unknown) => e)) as VmdibError;
    t.match(none.message, /answered 401/);
    t.match(none.hint, /wants credentials: put them in the URL/);
  },
);
