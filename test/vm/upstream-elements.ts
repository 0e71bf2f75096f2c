// DIB's own (upstream) elements, unchanged, through the real CLI and helper VM in a couple of minutes: the
// tiny-upstream fixture on tiny-os pulls in upstream package-installs (its squash runs in the appliance's python3 with
// yaml and our diskimage_builder shim, under `sudo -E`), install-bin, pkg-map (get_image_element_array), install-static,
// manifests, install-types, sysprep and block-device-mbr (its YAML). The host then reads what they left in the image.
// Needs Debian's python3-diskimage-builder (the upstream elements); skipped without it.
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const FIXTURES = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
const UPSTREAM = "/usr/lib/python3/dist-packages/diskimage_builder/elements";
// sfdisk and debugfs live in sbin, which a normal user's PATH may lack.
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;

t.test(
  "upstream elements run unchanged in the helper VM",
  { skip: !existsSync(UPSTREAM) && "python3-diskimage-builder is not installed" },
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "vmdib-upstream-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const run = await execa(VMDIB, ["build", "-n", "-o", "out/up", "-t", "raw", "tiny-upstream"], {
      cwd: dir,
      // Fixtures first: earlier ELEMENTS_PATH entries win, so everything but tiny-os and tiny-upstream is DIB's.
      env: { ELEMENTS_PATH: `${FIXTURES}:${UPSTREAM}` },
      reject: false,
      all: true,
    });
    t.equal(run.exitCode, 0, run.all?.split("\n").slice(-40).join("\n"));
    if (run.exitCode !== 0) return;
    t.match(run.stdout, /dib-run-parts 99-squash-package-install +\d/, "upstream's squash ran (extra-data.d)");
    t.match(run.stdout, /dib-run-parts 10-package-installs +\d/, "upstream's package-installs ran (pre-install.d)");

    const raw = join(dir, "out", "up.raw");
    const table = JSON.parse((await execa("sfdisk", ["--json", raw], { env: { PATH } })).stdout).partitiontable;
    t.equal(table.label, "dos", "upstream block-device-mbr's layout");
    const part = join(dir, "root.img");
    await execa("dd", [`if=${raw}`, `of=${part}`, "bs=512", `skip=${table.partitions[0].start}`, "status=none"]);
    const cat = async (path: string) =>
      (await execa("debugfs", ["-R", `cat ${path}`, part], { env: { PATH }, stderr: "ignore" })).stdout;
    // One line per install-packages call: its arguments (package-installs-v2 passes a set: sort the words).
    const calls = (await cat("/etc/tiny-packages")).split("\n").map((l) => l.split(" ").sort().join(" "));
    t.same(
      calls.filter((c) => c !== "" && !c.startsWith("-e")),
      ["tiny-pre-package", "rsync tiny-package-mapped"],
      "package-installs-v2 through pkg-map in the chroot: pre-install.d, then install.d with the element's mapping " +
        "and install-static's rsync; the other architecture's package left out",
    );
    t.match(await cat("/etc/tiny-static"), /installed by install-static/, "install-static (rsync in the chroot)");
    t.match(await cat("/usr/share/pkg-map/tiny-upstream"), /tiny-package-mapped/, "pkg-map's extra-data.d copy");
    t.match(
      await cat("/usr/local/bin/pkg-map"),
      /Translate package name/,
      "install-bin put the elements' bin/ in place",
    );

    const manifests = await readdir(join(dir, "out", "up.d"), { recursive: true });
    t.ok(
      manifests.some((f) => f.endsWith("dib_environment")),
      `upstream manifests published next to -o: ${manifests.join(", ")}`,
    );
  },
);
