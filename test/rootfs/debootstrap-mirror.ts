// The host-side debootstrap stage one (src/rootfs/debootstrap.ts) against a bad mirror, served for real on
// 127.0.0.1: a 404 and a refused connection both stop with an error naming the mirror URL and the setting that
// changes it, and leave nothing in the image cache.
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { renderError } from "../../src/cli.js";
import { VmdibError } from "../../src/errors.js";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";
import { redactSecrets } from "../../src/redact.js";
import { prepareDebootstrapStage1 } from "../../src/rootfs/debootstrap.js";

const ELEMENTS = [
  { name: "debian-minimal", path: join(BUILTIN_ELEMENTS_DIR, "debian-minimal") },
  { name: "debootstrap", path: join(BUILTIN_ELEMENTS_DIR, "debootstrap") },
];

async function stage1(t: { teardown(fn: () => unknown): void }, mirror: string, extraEnv: Record<string, string> = {}) {
  const cacheRoot = await mkdtemp(join(tmpdir(), "vmdib-stage1-cache-"));
  const imageCache = await mkdtemp(join(tmpdir(), "vmdib-stage1-images-"));
  t.teardown(() => Promise.all([cacheRoot, imageCache].map((d) => rm(d, { recursive: true, force: true }))));
  const err = await prepareDebootstrapStage1({
    elements: ELEMENTS,
    env: { DIB_DISTRIBUTION_MIRROR: mirror, DIB_RELEASE: "bookworm", ...extraEnv },
    arch: "amd64",
    imageCache,
    guestImageCache: "/vmdib/cache",
    cacheRoot,
  }).catch((e: unknown) => e);
  return { err: err as VmdibError, imageCache };
}

/** An HTTP server that answers 404 to everything, and the requests it saw. */
async function notFoundServer(): Promise<{ url: string; server: Server; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? "");
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/debian`, server, hits };
}

t.test("the mirror answers 404: the URL, the status and DIB_DISTRIBUTION_MIRROR", async (t) => {
  const { url, server, hits } = await notFoundServer();
  t.teardown(() => server.close());
  const { err, imageCache } = await stage1(t, url);
  t.ok(err instanceof VmdibError, String(err));
  t.equal(err.message, `the Debian mirror ${url} answered 404 Not Found for ${url}/dists/bookworm/InRelease`);
  t.match(err.hint, /DIB_DISTRIBUTION_MIRROR/);
  t.same(hits, ["/debian/dists/bookworm/InRelease"], "one request, for the signed index");
  t.same(await readdir(imageCache), [], "nothing left in the image cache");
});

t.test("the mirror refuses the connection: the URL, the reason and DIB_DISTRIBUTION_MIRROR", async (t) => {
  // A port that was just free: nothing listens there now.
  const { url, server } = await notFoundServer();
  await new Promise((r) => server.close(r));
  const { err, imageCache } = await stage1(t, url);
  t.ok(err instanceof VmdibError, String(err));
  t.equal(err.message, `cannot reach the Debian mirror ${url}`);
  t.match(err.context.join("\n"), /ECONNREFUSED/);
  t.match(err.hint, /DIB_DISTRIBUTION_MIRROR/);
  t.same(await readdir(imageCache), []);
});

t.test("credentials in the mirror URL are not shown in the error the user sees", async (t) => {
  const { url, server } = await notFoundServer();
  t.teardown(() => server.close());
  const withCreds = url.replace("http://", "http://user:s3cret@");
  const { err } = await stage1(t, withCreds);
  t.ok(err instanceof VmdibError, String(err));
  // What `vmdib` prints (src/cli.ts): the rendered error, through the secret filter.
  const shown = redactSecrets(renderError(err, true));
  t.match(shown, /http:\/\/\*\*\*@127\.0\.0\.1/);
  t.notMatch(shown, /s3cret/);
});

t.test("an authenticated mirror refusing the credentials: 401, a hint about them, the password nowhere", async (t) => {
  const seen: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(401, { "www-authenticate": 'Basic realm="mirror"' });
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const { err, imageCache } = await stage1(t, `http://ci:s3cret@127.0.0.1:${port}/debian`);
  t.ok(err instanceof VmdibError, String(err));
  t.same(seen, [`Basic ${Buffer.from("ci:s3cret").toString("base64")}`], "the credentials went as a Basic header");
  const shown = renderError(err, true);
  t.match(shown, /answered 401 Unauthorized/);
  t.match(shown, /refused the credentials in its URL/);
  t.notMatch(shown, /s3cret/, "not even unfiltered");
  t.same(await readdir(imageCache), []);
});
