// Faults caused for real in a build: the build tree fills up; the image's filesystem fills up (while an element shows
// secrets on the console and in its output). The error says which space ran out, how much was used, and the option
// that gives more; the image already at -o is untouched; no secret reaches the output, --logfile or the kept console.
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { cacheDir, PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

t.test("the build tree fills up: 'build space exhausted', the size used, and --memory", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-faults-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, "out"));
  await writeFile(join(dir, "out", "full.raw"), "the older image\n");
  // A small helper VM: its tmpfs tree fills after a few hundred MB.
  const run = await execa(
    VMDIB,
    ["build", "-n", "--memory", "1024", "-o", "out/full", "-t", "raw", "tiny-os", "tiny-fill"],
    { cwd: dir, env: { ELEMENTS_PATH: ELEMENTS }, reject: false, all: true },
  );
  t.equal(run.exitCode, 1, "exit 1");
  t.match(
    run.stderr,
    /build space exhausted: the build tree in the helper VM's memory is full \(\d+ MiB used of \d+ MiB\)/,
  );
  t.match(run.stderr, /hint: .*--memory \(now 1024 MB\)/);
  t.notMatch(run.stderr, /\n\s+at /, "no stack trace");
  t.equal(await readFile(join(dir, "out", "full.raw"), "utf8"), "the older image\n", "the older image is untouched");
});

/** The fake key tiny-fill-image prints: its body lines, none of which may show up anywhere. */
async function fixtureKeyBody(): Promise<string[]> {
  const script = await readFile(join(ELEMENTS, "tiny-fill-image", "finalise.d", "60-tiny-fill-image"), "utf8");
  const block = /-----BEGIN OPENSSH PRIVATE KEY-----\n([\s\S]*?)\n-----END/.exec(script)?.[1] ?? "";
  return block.split("\n").filter((l) => l.length > 0);
}

t.test(
  "the image fills up in finalise.d: 'image space exhausted', the size used, --image-size; no secret kept anywhere",
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-faults-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    await mkdir(join(dir, "out"));
    await writeFile(join(dir, "out", "img.raw"), "the older image\n");
    const body = await fixtureKeyBody();
    t.ok(body.length >= 25, "the fixture prints a key of many lines");
    const kept = join(cacheDir(process.env), "logs", "last-serial.log");
    await rm(kept, { force: true });
    const run = await execa(
      VMDIB,
      [
        // A small image (and a journal that fits in it: DIB's 64 MiB does not) fills quickly.
        ...["build", "-n", "--image-size", "100M", "--mkfs-journal-size", "4", "--logfile", "build.log"],
        ...["-o", "out/img", "-t", "raw"],
        ...["tiny-os", "tiny-fill-image"],
      ],
      {
        cwd: dir,
        env: {
          ELEMENTS_PATH: ELEMENTS,
          DIB_TINY_PROXY: "http://alice:s3cret-pw@proxy.invalid:3128/",
          // Debug keeps the helper VM's whole serial console (cacheDir/logs/last-serial.log), with the guest's shell
          // trace in it, which shows the host key it is given.
          VMDIB_DEBUG: "1",
        },
        reject: false,
      },
    );
    t.equal(run.exitCode, 1, "exit 1");
    t.match(
      run.stderr,
      /image space exhausted: the image's root filesystem is full \(\d+ MiB used of \d+ MiB\)/,
      "says which space ran out and how much was used",
    );
    t.match(run.stderr, /hint: .*--image-size \(now 100 MiB\)/, "names the option that gives more, and its value");
    t.notMatch(run.stderr, /\n\s+at /, "no stack trace");
    t.equal(await readFile(join(dir, "out", "img.raw"), "utf8"), "the older image\n", "the older image is untouched");

    const log = await readFile(join(dir, "build.log"), "utf8");
    const serial = await readFile(kept, "utf8");
    t.match(log, /tiny-fill-image proxy: http:\/\/\*\*\*@proxy\.invalid:3128\//, "the script's output is logged");
    t.match(serial, /tiny-fill-image proxy: http:\/\/\*\*\*@proxy\.invalid:3128\//, "and its console line kept");
    t.match(serial, /BEGIN OPENSSH PRIVATE KEY/, "the console had keys on it (the element's, the traced host key)");
    t.equal((await stat(kept)).mode & 0o777, 0o600, "the kept console is the user's alone");
    for (const [name, text] of [
      ["stdout", run.stdout],
      ["stderr (the error with its last output lines)", run.stderr],
      ["--logfile", log],
      ["the kept serial console", serial],
    ] as const) {
      t.notOk(text.includes("s3cret-pw"), `no proxy password in ${name}`);
      const leaked = body.filter((l) => text.includes(l));
      t.same(leaked, [], `no line of the key's body in ${name}`);
    }
    // Between a key's BEGIN and END lines the kept console holds nothing but "***" (the traced host key included).
    const inside: string[] = [];
    let inKey = false;
    for (const l of serial.split("\n")) {
      if (/END [A-Z ]*PRIVATE KEY/.test(l)) inKey = false;
      else if (inKey) inside.push(l);
      else if (/BEGIN [A-Z ]*PRIVATE KEY/.test(l)) inKey = true;
    }
    t.ok(inside.length > 0, "keys were on the console");
    t.same(
      inside.filter((l) => l !== "***"),
      [],
      "nothing of any key's body in the kept console",
    );
  },
);

t.test(
  "a dead Debian mirror for debootstrap: one error naming the mirror and its variable (on the host before any VM, or in the guest)",
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-faults-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    // A port that was just free: nothing listens there, the connection is refused.
    const server = createServer();
    const port = await new Promise<number>((r) =>
      server.listen(0, "127.0.0.1", () => r((server.address() as { port: number }).port)),
    );
    await new Promise((r) => server.close(r));
    const mirror = `http://127.0.0.1:${port}/debian`;
    const run = await execa(VMDIB, ["build", "-n", "-o", "out/m", "-t", "raw", "debian-minimal"], {
      cwd: dir,
      // DIB's Debian-specific variable (it wins over DIB_DISTRIBUTION_MIRROR, as in DIB).
      env: { DIB_DEBIAN_DISTRIBUTION_MIRROR: mirror },
      reject: false,
    });
    t.equal(run.exitCode, 1, "exit 1");
    t.match(run.stderr, `error: cannot reach the Debian mirror ${mirror}`, "names the mirror");
    t.match(run.stderr, /ECONNREFUSED/, "and why");
    t.match(run.stderr, /hint: .*DIB_DEBIAN_DISTRIBUTION_MIRROR/, "names the variable the mirror came from");
    t.notMatch(run.stderr, /hint: .*\bDIB_DISTRIBUTION_MIRROR/, "not another one");
    t.notMatch(run.stdout + run.stderr, /the guest runs it|starting QEMU|debootstrap failed/, "stops before the guest");
    t.notMatch(run.stderr, /\n\s+at /, "no stack trace");

    // When the host does not make debootstrap's first stage (here: another tool asked for), the guest's debootstrap
    // element meets the dead mirror itself and fails at once with the same story.
    const inGuest = await execa(VMDIB, ["build", "-n", "-o", "out/m", "-t", "raw", "debian-minimal"], {
      cwd: dir,
      env: { DIB_DEBIAN_DISTRIBUTION_MIRROR: mirror, DIB_DEBOOTSTRAP_TOOL: "mmdebstrap" },
      reject: false,
    });
    t.equal(inGuest.exitCode, 1, "exit 1 from the guest too");
    t.match(inGuest.stdout, /debootstrap stage one runs in the guest: DIB_DEBOOTSTRAP_TOOL=mmdebstrap/);
    t.match(
      inGuest.stderr,
      /error: step 'root' failed with exit code 1 \(root\.d\/08-debootstrap, exit code 1\)/,
      "one error, naming the step and the script",
    );
    t.match(
      inGuest.stderr,
      `debootstrap: cannot reach the mirror ${mirror} from the appliance (wget: failed: Connection refused.)`,
      "the guest says it cannot reach the mirror, and why",
    );
    t.match(inGuest.stderr, /Hint: check DIB_DEBIAN_DISTRIBUTION_MIRROR;/, "naming the variable that set it");
    t.notMatch(inGuest.stderr, /\n\s+at /, "no stack trace");
  },
);
