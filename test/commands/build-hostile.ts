// Bad and hostile input to `vmdib build --dry-run` (src/commands/build.ts): an -o path with spaces, quotes and
// non-ASCII; element names and DIB_* values with shell metacharacters (never evaluated, carried literally); proxy
// credentials and private keys in the environment (never printed, as text or --json).
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { vmdib } from "../helpers/cli.js";

const ENV = { DIB_DISTRIBUTION_MIRROR: "http://mirror.example.invalid/debian" };
const TINY = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

/** A scratch directory and a marker path in it that only a shell evaluating our input would create. */
async function scratch(t: { teardown(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-hostile-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return { dir, marker: join(dir, "EVALUATED") };
}

t.test("-o with spaces, quotes, non-ASCII and $(...) is planned literally", async (t) => {
  const { dir, marker } = await scratch(t);
  const out = join(dir, `o 'q" é ü $(touch ${marker}) \`touch ${marker}\``, "img");
  const r = await vmdib(["build", "--dry-run", "--json", "-n", "-o", out, "tiny-os"], { ...ENV, ELEMENTS_PATH: TINY });
  t.equal(r.code, 0, r.stderr);
  const plan = JSON.parse(r.stdout);
  t.same(
    plan.outputs.map((o: { path: string }) => o.path),
    [`${out}.qcow2`],
    "the output path is exactly the one given",
  );
  const text = await vmdib(["build", "--dry-run", "-n", "-o", out, "tiny-os"], { ...ENV, ELEMENTS_PATH: TINY });
  t.equal(text.code, 0, text.stderr);
  t.ok(text.stdout.includes(`${out}.qcow2`));
  t.notOk(existsSync(marker), "nothing evaluated the path");
});

t.test("DIB_* values with $(...), backticks, ; and newlines reach the plan unchanged", async (t) => {
  const { marker } = await scratch(t);
  const value = `$(touch ${marker})\`touch ${marker}\`; touch ${marker}\nsecond line 'single' "double" \\ é`;
  const r = await vmdib(["build", "--dry-run", "--json", "-n", "tiny-os"], {
    ...ENV,
    ELEMENTS_PATH: TINY,
    DIB_HOSTILE: value,
  });
  t.equal(r.code, 0, r.stderr);
  t.equal(JSON.parse(r.stdout).environment.common.DIB_HOSTILE, value);
  t.notOk(existsSync(marker), "nothing evaluated the value");
});

t.test("element names with shell metacharacters: 'not found', exit 2, nothing evaluated", async (t) => {
  const { marker } = await scratch(t);
  for (const name of [`$(touch ${marker})`, `\`touch ${marker}\``, `x; touch ${marker}`, "a\nb"]) {
    const r = await vmdib(["build", "--dry-run", "-n", name], { ...ENV, ELEMENTS_PATH: TINY });
    t.equal(r.code, 2, JSON.stringify(name));
    t.match(r.stderr, /not found|element name/, JSON.stringify(name));
    t.notMatch(r.stderr, /\n\s+at /, "no stack trace");
  }
  t.notOk(existsSync(marker), "nothing evaluated the names");
});

const KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
const SECRET_ENV = {
  ...ENV,
  ELEMENTS_PATH: TINY,
  http_proxy: "http://alice:s3cret-proxy@proxy.local:3128",
  HTTPS_PROXY: "http://bob:s3cret-https@proxy.local:3128",
  DIB_PROXY_URL: "http://carol:s3cret-dib@proxy.local:3128/",
  DIB_DISTRIBUTION_MIRROR: "http://dave:s3cret-mirror@mirror.example.invalid/debian",
  DIB_SECRET_KEY: `-----BEGIN OPENSSH PRIVATE KEY-----\n${KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n`,
};

t.test("no proxy credentials or private key in the plan, as text or --json", async (t) => {
  for (const json of [false, true]) {
    const r = await vmdib(["build", "--dry-run", ...(json ? ["--json"] : []), "-n", "tiny-os"], SECRET_ENV);
    t.equal(r.code, 0, r.stderr);
    t.notMatch(r.stdout + r.stderr, /s3cret|b3BlbnNz/, `${json ? "--json" : "text"}: no secret`);
    t.match(r.stdout, /http:\/\/\*\*\*@mirror\.example\.invalid\/debian/, "the mirror's host is still shown");
    if (json) t.doesNotThrow(() => JSON.parse(r.stdout), "redacted --json is still JSON");
  }
});

t.test("no credentials in an error message either", async (t) => {
  // Any error text goes through the same filter; an unknown element named like a URL with credentials shows it.
  const r = await vmdib(["build", "--dry-run", "-n", "http://erin:s3cret-bad@mirror.example.invalid/x"], SECRET_ENV);
  t.equal(r.code, 2);
  t.match(r.stderr, /element 'http:\/\/\*\*\*@mirror\.example\.invalid\/x' not found/);
  t.notMatch(r.stderr, /s3cret/);
});

t.test(
  "an output directory without write permission: exit 2 before anything boots",
  { skip: process.getuid?.() === 0 ? "root may write anywhere; run as a normal user" : false },
  async (t) => {
    const { dir } = await scratch(t);
    const ro = join(dir, "read-only");
    await mkdir(ro, { mode: 0o555 });
    t.teardown(() => chmod(ro, 0o755));
    const r = await vmdib(["build", "-n", "-o", join(ro, "img"), "tiny-os"], { ...ENV, ELEMENTS_PATH: TINY }, dir);
    t.equal(r.code, 2, r.stderr);
    t.match(r.stderr, /cannot write to the output directory .*read-only \(EACCES\)/);
    t.match(r.stderr, /hint: /);
  },
);
