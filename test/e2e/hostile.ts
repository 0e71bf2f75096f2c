// One real build (tiny-os + tiny-hostile) with hostile input: an -o path with spaces, quotes, non-ASCII and $(...),
// a DIB_* value with $(...), backticks, `;` and newlines that an element script writes into the image, and script
// output carrying a proxy URL with credentials and a private key. The value must arrive byte for byte, nothing
// may be evaluated on the host or in the guest, and the --json event stream must not show the secrets.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
const KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";

t.test("hostile -o, DIB_* value and script output: literal, never evaluated, secrets not logged", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-hostile-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // A shell evaluating any of this would create one of these files: on the host (/tmp), in the image (/tmp), or
  // in the build's working directory.
  const id = randomBytes(6).toString("hex");
  const marker = (n: number) => `/tmp/vmdib-evaluated-${id}-${n}`;
  const value = `$(touch ${marker(1)})\`touch ${marker(2)}\`; touch ${marker(3)}\n'single' "double" \\ é ü $HOME`;
  // Relative markers: evaluated with the build's working directory, they would appear next to the output directory.
  const outDir = join(dir, `out 'q" é ü $(touch evaluated-4) \`touch evaluated-5\``);
  const run = await execa(
    VMDIB,
    [
      ...["build", "-n", "--json", "--logfile", join(dir, "build.log"), "-o", join(outDir, "tiny")],
      ...["-t", "qcow2,tar", "tiny-os", "tiny-hostile"],
    ],
    {
      cwd: dir,
      env: {
        ELEMENTS_PATH: ELEMENTS,
        DIB_HOSTILE: value,
        DIB_HOSTILE_LOG: `proxy http://alice:s3cret-a@proxy.local:3128 key\n-----BEGIN OPENSSH PRIVATE KEY-----\n${KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----`,
        // Nothing here downloads through a proxy; the variable is set to prove it is not echoed either.
        http_proxy: "http://bob:s3cret-b@127.0.0.1:9",
      },
      reject: false,
      all: true,
    },
  );
  t.equal(run.exitCode, 0, run.all?.split("\n").slice(-30).join("\n"));
  if (run.exitCode !== 0) return;
  t.same((await readdir(outDir)).sort(), ["tiny.qcow2", "tiny.tar"], "outputs land in the hostile directory");
  const stored = (await execa("tar", ["xOf", join(outDir, "tiny.tar"), "./etc/vmdib-hostile"], { encoding: "buffer" }))
    .stdout;
  t.equal(Buffer.from(stored).toString("utf8"), value, "the value reached the image byte for byte");
  const tree = (await execa("tar", ["tf", join(outDir, "tiny.tar")])).stdout;
  t.notMatch(tree, /vmdib-evaluated-/, "no marker in the image");
  for (let n = 1; n <= 3; n++) t.notOk(existsSync(marker(n)), `no marker ${n} on the host`);
  t.same((await readdir(dir)).sort(), ["build.log", basename(outDir)].sort(), "nothing else in the working directory");
  t.equal((await execa("qemu-img", ["check", join(outDir, "tiny.qcow2")], { reject: false })).exitCode, 0);

  const events = run.stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { type: string; line?: string });
  t.ok(
    events.some((e) => e.type === "output" && e.line === "proxy http://***@proxy.local:3128 key"),
    "the script's line is there, redacted",
  );
  t.notMatch(run.all ?? "", /s3cret|b3BlbnNz/, "no credentials or key material in stdout or stderr");
  const log = await readFile(join(dir, "build.log"), "utf8");
  t.match(log, /proxy http:\/\/\*\*\*@proxy\.local:3128 key/, "--logfile has the script's line, redacted");
  t.notMatch(log, /s3cret|b3BlbnNz/, "no credentials or key material in the --logfile");
});
