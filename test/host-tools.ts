// Tests src/host-tools.ts: request parsing, which zstd calls the host runs (and which it refuses), and the server's
// file protocol against a fake zstd, in a temporary directory.
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { parseToolRequest, serveHostTools, zstdHostArgv } from "../src/host-tools.js";

const V = "*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***";

t.test("parses version and arguments", async (t) => {
  t.same(parseToolRequest(`version ${V}\narg -q\narg -9\narg -T0\narg -c\n`), {
    version: V,
    args: ["-q", "-9", "-T0", "-c"],
  });
});

t.test("mkinitramfs's call runs as is, the input after --", async (t) => {
  t.same(zstdHostArgv({ version: V, args: ["-q", "-9", "-T0", "-c"] }, `${V}\n`, "/w/zstd-1.in"), {
    argv: ["-q", "-9", "-T0", "-c", "--", "/w/zstd-1.in"],
  });
});

t.test("refuses another version, other options, no -c", async (t) => {
  t.match(zstdHostArgv({ version: V.replace("1.5.4", "1.5.5"), args: ["-c"] }, V, "x"), { refused: /v1.5.5/ });
  t.match(zstdHostArgv({ version: "", args: ["-c"] }, V, "x"), { refused: /unknown version/ });
  t.match(zstdHostArgv({ version: V, args: ["-c", "-o", "/etc/passwd"] }, V, "x"), { refused: /'-o'/ });
  t.match(zstdHostArgv({ version: V, args: ["-c", "--ultra"] }, V, "x"), { refused: /'--ultra'/ });
  t.match(zstdHostArgv({ version: V, args: ["-q", "-9"] }, V, "x"), { refused: /-c/ });
});

async function waitFor(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (
      await stat(path).then(
        () => true,
        () => false,
      )
    )
      return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${path} never appeared`);
}

t.test("answers a request with .out then .done, a refusal with .fail", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-host-tools-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const runs: string[][] = [];
  const reports: string[] = [];
  const server = serveHostTools(dir, V, {
    zstd: "/fake/zstd",
    intervalMs: 5,
    report: (m) => reports.push(m),
    run: async (_file, argv, output) => {
      runs.push([...argv]);
      await writeFile(output, `compressed:${await readFile(argv[argv.length - 1] as string, "utf8")}`);
    },
  });
  t.teardown(() => server.stop());

  await writeFile(join(dir, "zstd-7.in"), "cpio");
  await writeFile(join(dir, "zstd-7.req"), `version ${V}\narg -q\narg -9\narg -c\n`);
  await waitFor(join(dir, "zstd-7.done"));
  t.equal(await readFile(join(dir, "zstd-7.out"), "utf8"), "compressed:cpio");
  t.same(runs, [["-q", "-9", "-c", "--", join(dir, "zstd-7.in")]]);

  await writeFile(join(dir, "zstd-8.in"), "cpio");
  await writeFile(join(dir, "zstd-8.req"), `version other\narg -c\n`);
  await waitFor(join(dir, "zstd-8.fail"));
  t.match(await readFile(join(dir, "zstd-8.fail"), "utf8"), /other/);
  t.equal(runs.length, 1);

  // Names that are not requests are left alone.
  await writeFile(join(dir, "evil;rm.req"), `version ${V}\narg -c\n`);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(runs.length, 1);
  t.equal(reports.length, 2);
});

t.test("a failing zstd becomes .fail, not an error", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-host-tools-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const server = serveHostTools(dir, V, {
    zstd: "/fake/zstd",
    intervalMs: 5,
    report: () => {},
    run: async () => {
      throw new Error("zstd: error 70 : Write error");
    },
  });
  t.teardown(() => server.stop());
  await writeFile(join(dir, "zstd-9.in"), "cpio");
  await writeFile(join(dir, "zstd-9.req"), `version ${V}\narg -c\n`);
  await waitFor(join(dir, "zstd-9.fail"));
  t.match(await readFile(join(dir, "zstd-9.fail"), "utf8"), /Write error/);
});
