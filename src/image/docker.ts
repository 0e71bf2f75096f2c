// The daemonless docker output (pure): the docker-archive layout `docker save` writes and `docker load`,
// `podman load` and skopeo (`docker-archive:`) read — manifest.json naming one config and one layer, the layer being
// the image tree as an uncompressed tar whose sha256 is the config's rootfs.diff_ids entry.
import { UsageError } from "../errors.js";

/** Debian/DIB ARCH → the GOARCH names image configs use (OCI image-spec `architecture`). */
const DOCKER_ARCH: Record<string, string> = {
  amd64: "amd64",
  x86_64: "amd64",
  i386: "386",
  arm64: "arm64",
  aarch64: "arm64",
  armhf: "arm",
  ppc64el: "ppc64le",
  ppc64le: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

export function dockerArch(arch: string): string {
  return DOCKER_ARCH[arch] ?? arch;
}

// docker's reference grammar, simplified: path components of [a-z0-9] joined by . _ __ or -, separated by /,
// an optional registry host (may hold a port), an optional :tag.
const COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const REFERENCE = new RegExp(
  `^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?${COMPONENT}(?:/${COMPONENT})*(?::[\\w][\\w.-]{0,127})?$`,
);

/**
 * The RepoTags entry: `--docker-target` as given (it must be a valid reference; `:latest` is added when it has no
 * tag), else one made from the image file name, as DIB's help says (lower-cased, other characters become `-`).
 */
export function dockerReference(target: string | undefined, imageName: string): string {
  const withTag = (ref: string) => (/:[^/]+$/.test(ref) ? ref : `${ref}:latest`);
  if (target !== undefined) {
    if (!REFERENCE.test(target)) {
      throw new UsageError(`--docker-target '${target}' is not a valid image reference`, {
        hint: "use lower-case NAME[:TAG], e.g. myorg/debian:12",
      });
    }
    return withTag(target);
  }
  const base = imageName.split("/").pop() ?? "";
  const name = base
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return withTag(name || "vmdib-image");
}

export interface DockerArchiveFiles {
  /** File name of the config inside the archive (`<sha256 of config>.json`, as docker save names it). */
  readonly configName: string;
  readonly config: string;
  /** Where the layer tar goes inside the archive. */
  readonly layerName: string;
  readonly manifest: string;
}

/** The config and manifest.json for one uncompressed layer tar whose sha256 is `layerSha256` (hex). */
export function dockerArchiveFiles(
  o: { layerSha256: string; arch: string; reference: string; created: string },
  sha256: (text: string) => string,
): DockerArchiveFiles {
  const config = JSON.stringify({
    architecture: dockerArch(o.arch),
    os: "linux",
    created: o.created,
    // What `docker import` gives: no command, the usual PATH.
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
    rootfs: { type: "layers", diff_ids: [`sha256:${o.layerSha256}`] },
    history: [{ created: o.created, created_by: "vmdib build" }],
  });
  const configName = `${sha256(config)}.json`;
  const layerName = `${o.layerSha256}/layer.tar`;
  const manifest = JSON.stringify([{ Config: configName, RepoTags: [o.reference], Layers: [layerName] }]);
  return { configName, config, layerName, manifest };
}

/** Debian/DIB ARCH → appc's `arch` label values (appc spec, "Architectures Table", os linux). */
const ACI_ARCH: Record<string, string> = {
  amd64: "amd64",
  x86_64: "amd64",
  i386: "i386",
  arm64: "aarch64",
  aarch64: "aarch64",
  armhf: "armv7l",
  ppc64el: "ppc64le",
  s390x: "s390x",
};

/**
 * The appc ImageManifest of an aci output (schema 0.8.11): the name (an AC identifier: the image reference without
 * its tag or a registry port) and the arch/os labels runtimes match on.
 */
export function aciManifest(reference: string, arch: string): string {
  const acName = reference.replace(/:[^/]*$/, "").replace(/:[0-9]+\//, "/");
  return `${JSON.stringify(
    {
      acKind: "ImageManifest",
      acVersion: "0.8.11",
      name: acName,
      labels: [
        { name: "arch", value: ACI_ARCH[arch] ?? arch },
        { name: "os", value: "linux" },
      ],
    },
    null,
    2,
  )}\n`;
}
