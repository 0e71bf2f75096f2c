// Tests src/mirror.ts: DIB_DISTRIBUTION_MIRROR, one-line and deb822 apt sources, and the error when there is none.
import t from "tap";
import { UsageError } from "../src/errors.js";
import { type HostFiles, parseOneLineSources, pickDebianMain, redactUrl, resolveMirror } from "../src/mirror.js";

function host(files: Record<string, string>): HostFiles {
  return {
    readFile: (p) => files[p],
    listDir: (d) =>
      Object.keys(files)
        .filter((p) => p.startsWith(`${d}/`))
        .map((p) => p.slice(d.length + 1))
        .sort(),
  };
}

t.test("DIB_DISTRIBUTION_MIRROR wins and loses its trailing slash", async (t) => {
  const h = host({ "/etc/apt/sources.list": "deb http://other.example.invalid/debian bookworm main\n" });
  t.equal(
    resolveMirror({ DIB_DISTRIBUTION_MIRROR: "http://mirror.example.invalid/debian/" }, h),
    "http://mirror.example.invalid/debian",
  );
  t.throws(() => resolveMirror({ DIB_DISTRIBUTION_MIRROR: "mirror.example.invalid" }, h), UsageError);
});

t.test("one-line sources.list: the main archive, not security, not deb-src, options skipped", async (t) => {
  const h = host({
    "/etc/apt/sources.list": [
      "# comment",
      "deb-src http://src.example.invalid/debian bookworm main",
      "deb http://sec.example.invalid/debian-security bookworm-security main",
      "deb [ arch=amd64 signed-by=/usr/share/keyrings/x.gpg ] http://deb.example.invalid/debian/ bookworm main contrib",
      "",
    ].join("\n"),
  });
  t.equal(resolveMirror({}, h), "http://deb.example.invalid/debian");
});

t.test("deb822 .sources: picks the Debian entry with a release suite", async (t) => {
  const h = host({
    "/etc/apt/sources.list.d/debian.sources": [
      "Types: deb",
      "# http://snapshot.example.invalid/archive/debian/20250520T000000Z",
      "URIs: http://deb.example.invalid/debian",
      "Suites: bookworm bookworm-updates",
      "Components: main",
      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
      "",
      "Types: deb",
      "URIs: http://deb.example.invalid/debian-security",
      "Suites: bookworm-security",
      "Components: main",
      "",
    ].join("\n"),
    "/etc/apt/sources.list.d/other.list.disabled": "deb http://nope.example.invalid/x stable main\n",
    "/etc/apt/sources.list.d/vendor.sources":
      "Types: deb\nURIs: https://vendor.example.invalid/apt\nSuites: nodistro\nComponents: main\nEnabled: no\n",
  });
  t.equal(resolveMirror({}, h), "http://deb.example.invalid/debian");
});

t.test("a release suite beats a pocket-only entry", async (t) => {
  const sources = [
    ...parseOneLineSources("deb http://a.example.invalid/debian bookworm-updates main\n", "x"),
    ...parseOneLineSources("deb http://b.example.invalid/debian bookworm main\n", "y"),
  ];
  t.equal(pickDebianMain(sources), "http://b.example.invalid/debian");
});

t.test("no mirror anywhere: a UsageError naming DIB_DISTRIBUTION_MIRROR", async (t) => {
  const err = t.throws(() => resolveMirror({}, host({})));
  t.type(err, UsageError);
  t.match((err as UsageError).hint, /DIB_DISTRIBUTION_MIRROR/);
  t.match((err as Error).message, /no Debian mirror/);
});

t.test("redactUrl hides credentials only", async (t) => {
  t.equal(redactUrl("http://user:secret@mirror.example.invalid/debian"), "http://***@mirror.example.invalid/debian");
  t.equal(redactUrl("http://mirror.example.invalid/debian"), "http://mirror.example.invalid/debian");
  t.equal(redactUrl("https://tok@mirror.example.invalid/a@b"), "https://***@mirror.example.invalid/a@b");
});
