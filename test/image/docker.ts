import { createHash } from "node:crypto";
import t from "tap";
import { UsageError } from "../../src/errors.js";
import { aciManifest, dockerArch, dockerArchiveFiles, dockerReference } from "../../src/image/docker.js";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

t.test("the docker reference: --docker-target as given, else the image file name", async (t) => {
  t.equal(dockerReference("me/debian:12", "out/x"), "me/debian:12");
  t.equal(dockerReference("registry.local:5000/me/debian", "out/x"), "registry.local:5000/me/debian:latest");
  t.equal(dockerReference(undefined, "out/My Image_1"), "my-image_1:latest");
  t.equal(dockerReference(undefined, "out/..."), "vmdib-image:latest");
  t.throws(() => dockerReference("Me/Debian", "x"), UsageError, "upper case is not a valid repository");
  t.throws(() => dockerReference("a b", "x"), UsageError);
});

t.test("docker-archive config and manifest.json, as docker load and podman load read them", async (t) => {
  const layer = "a".repeat(64);
  const f = dockerArchiveFiles(
    { layerSha256: layer, arch: "arm64", reference: "me/x:1", created: "2024-01-01T00:00:00Z" },
    sha256,
  );
  const config = JSON.parse(f.config);
  t.equal(config.architecture, "arm64");
  t.equal(config.os, "linux");
  t.same(
    config.rootfs,
    { type: "layers", diff_ids: [`sha256:${layer}`] },
    "diff_ids: sha256 of the uncompressed layer",
  );
  t.equal(f.configName, `${sha256(f.config)}.json`, "the config is named by its digest");
  t.equal(f.layerName, `${layer}/layer.tar`);
  t.same(JSON.parse(f.manifest), [{ Config: f.configName, RepoTags: ["me/x:1"], Layers: [f.layerName] }]);
  t.equal(dockerArch("amd64"), "amd64");
  t.equal(dockerArch("ppc64el"), "ppc64le");
});

t.test("aci manifest: appc ImageManifest with arch and os labels", async (t) => {
  const m = JSON.parse(aciManifest("registry.local:5000/me/x:1", "arm64"));
  t.equal(m.acKind, "ImageManifest");
  t.equal(m.acVersion, "0.8.11");
  t.equal(m.name, "registry.local/me/x", "an AC identifier: no tag, no port");
  t.same(m.labels, [
    { name: "arch", value: "aarch64" },
    { name: "os", value: "linux" },
  ]);
});
