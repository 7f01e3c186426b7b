//! Reading a pod straight from the review's bytes, without building it in memory.
//!
//! An AdmissionReview may carry close to 3 MiB of pod, and a `serde_json::Value` of a million
//! `{}` volumes costs ten times its text. The injector needs a few facts from the pod, so it
//! reads the same borrowed text in passes that each keep only what they look for:
//! [`metadata`] reads the opt-in label and the annotations, and [`walk_spec`] streams every
//! container and port of `spec` through a [`SpecWalker`], without keeping any list. Memory per
//! review is the request body plus what the walkers keep, whatever the pod holds.
//!
//! The API server sends the pod as it decoded it (well-typed, defaults applied), so a field of
//! the wrong JSON type means the review did not come from an API server: it is an error here.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{ANNOTATION_PREFIX, INJECT_LABEL};

/// How many unknown `trousseau.keysuite.app/*` annotations are named in warnings; the rest are
/// only counted.
pub const MAX_NAMED_UNKNOWN: usize = 5;

/// A string of the pod, borrowed from the request body unless JSON escapes forced a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A list of the pod: whether it is there (neither absent nor `null`: the patch appends to it
/// rather than creating it), and how many entries it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListShape {
    /// A list (not absent, not `null`).
    pub present: bool,
    /// Entries.
    pub len: usize,
}

// ---------------------------------------------------------------------------------------------
// Pass 1: metadata.

/// What the injector reads of `metadata`.
#[derive(Debug, Default)]
pub struct PodMeta<'a> {
    /// Whether `metadata` is an object (else the patch creates it).
    pub present: bool,
    /// `metadata.name`.
    pub name: Option<Text<'a>>,
    /// `metadata.generateName` (pods of a ReplicaSet are named after admission).
    pub generate_name: Option<Text<'a>>,
    /// The value of the opt-in label, if set.
    pub inject_label: Option<Text<'a>>,
    /// The annotations the injector reads.
    pub annotations: Annotations<'a>,
}

/// The annotations the injector reads: those under [`ANNOTATION_PREFIX`] (the first
/// [`MAX_NAMED_UNKNOWN`] unknown ones by name, the others counted) and the few it honours from
/// elsewhere.
#[derive(Debug, Default)]
pub struct Annotations<'a> {
    /// Whether `metadata.annotations` is an object (else the patch creates it).
    pub present: bool,
    /// Known annotations: (name, value).
    known: Vec<(&'static str, Text<'a>)>,
    /// Unknown names under our prefix, the first few.
    pub unknown: Vec<Text<'a>>,
    /// How many unknown names under our prefix there are in all.
    pub unknown_count: usize,
}

impl<'a> Annotations<'a> {
    /// The value of a known annotation.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.known.iter().find(|(n, _)| *n == name).map(|(_, v)| &**v)
    }
}

/// The annotations whose values are kept: every one the injector understands.
fn known_annotation(name: &str) -> Option<&'static str> {
    super::KNOWN_ANNOTATIONS
        .iter()
        .chain([&super::DEFAULT_CONTAINER_ANNOTATION])
        .copied()
        .find(|known| *known == name)
}

/// Reads `metadata` of the pod `object` (the JSON text of `request.object`).
pub fn metadata(object: &str) -> Result<PodMeta<'_>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Pod<'a> {
        #[serde(default, borrow)]
        metadata: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta<'a> {
        #[serde(default, borrow)]
        name: Option<Text<'a>>,
        #[serde(default, borrow)]
        generate_name: Option<Text<'a>>,
        #[serde(default, borrow)]
        labels: Option<Labels<'a>>,
        #[serde(default, borrow)]
        annotations: Option<AnnotationMap<'a>>,
    }
    let pod: Pod<'_> = serde_json::from_str(object)?;
    let Some(meta) = pod.metadata else { return Ok(PodMeta::default()) };
    Ok(PodMeta {
        present: true,
        name: meta.name,
        generate_name: meta.generate_name,
        inject_label: meta.labels.and_then(|l| l.0),
        annotations: meta.annotations.map(|a| a.0).unwrap_or_default(),
    })
}

/// `metadata.labels`, keeping only the opt-in label's value.
struct Labels<'a>(Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels<'de>, A::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if &*key == INJECT_LABEL {
                        value = Some(map.next_value::<Text<'de>>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Labels(value))
            }
        }
        deserializer.deserialize_map(LabelsVisitor)
    }
}

/// `metadata.annotations`, keeping what [`Annotations`] describes.
struct AnnotationMap<'a>(Annotations<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for AnnotationMap<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnnotationsVisitor;
        impl<'de> Visitor<'de> for AnnotationsVisitor {
            type Value = AnnotationMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnnotationMap<'de>, A::Error> {
                let mut out = Annotations { present: true, ..Annotations::default() };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if let Some(known) = known_annotation(&key) {
                        let value = map.next_value::<Text<'de>>()?;
                        // A repeated key: the last wins, as in every JSON decoder Kubernetes uses.
                        out.known.retain(|(name, _)| *name != known);
                        out.known.push((known, value));
                        continue;
                    }
                    map.next_value::<IgnoredAny>()?;
                    if key.starts_with(ANNOTATION_PREFIX) {
                        out.unknown_count += 1;
                        if out.unknown.len() < MAX_NAMED_UNKNOWN {
                            out.unknown.push(key);
                        }
                    }
                }
                Ok(AnnotationMap(out))
            }
        }
        deserializer.deserialize_map(AnnotationsVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Passes over spec: containers and ports, streamed.

/// Which list of the pod a container is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// `spec.containers`.
    Containers,
    /// `spec.initContainers`.
    InitContainers,
}

impl List {
    /// The list's key in `spec`.
    pub fn key(self) -> &'static str {
        match self {
            List::Containers => "containers",
            List::InitContainers => "initContainers",
        }
    }
}

/// One declared container port.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView<'a> {
    /// Its name, which a Service's `targetPort` may refer to.
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    /// Its number (int32 in the API, checked by the caller).
    #[serde(default)]
    pub container_port: Option<i64>,
    /// The node port bound to it, if any.
    #[serde(default)]
    pub host_port: Option<i64>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    #[serde(default, borrow)]
    pub protocol: Option<Text<'a>>,
}

impl PortView<'_> {
    /// Whether Services reach it over TCP.
    pub fn is_tcp(&self) -> bool {
        self.protocol.as_deref().is_none_or(|p| p == "TCP")
    }
}

/// The JSON pointers, inside a container, of the probe and lifecycle-hook ports that may name a
/// port; in the order they are rewritten.
pub const PORT_REFERENCES: [&str; 10] = [
    "/livenessProbe/httpGet/port",
    "/livenessProbe/tcpSocket/port",
    "/readinessProbe/httpGet/port",
    "/readinessProbe/tcpSocket/port",
    "/startupProbe/httpGet/port",
    "/startupProbe/tcpSocket/port",
    "/lifecycle/postStart/httpGet/port",
    "/lifecycle/postStart/tcpSocket/port",
    "/lifecycle/preStop/httpGet/port",
    "/lifecycle/preStop/tcpSocket/port",
];

/// One container, without its ports (the walker saw them one by one).
#[derive(Debug, Default)]
pub struct ContainerView<'a> {
    /// Its name.
    pub name: Option<Text<'a>>,
    /// `Always` makes an init container a native sidecar.
    pub restart_policy: Option<Text<'a>>,
    /// `securityContext.privileged`.
    pub privileged: bool,
    /// Probe and hook ports given by name: (index in [`PORT_REFERENCES`], the name).
    pub named_port_references: Vec<(usize, Text<'a>)>,
}

/// Sees the containers and ports of a pod as [`walk_spec`] reads them, in document order.
pub trait SpecWalker<'a> {
    /// Port `p` of container `c` of `list`.
    fn port(&mut self, list: List, c: usize, p: usize, port: PortView<'a>);
    /// Container `c` of `list`, once its ports were seen.
    fn container(&mut self, list: List, c: usize, container: ContainerView<'a>);
    /// A volume of `spec.volumes`, by name.
    fn volume(&mut self, _name: Option<&str>) {}
}

/// The shape of `spec`, as the patch needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecShape {
    /// Whether `spec` is an object.
    pub present: bool,
    /// `spec.containers`.
    pub containers: ListShape,
    /// `spec.initContainers`.
    pub init_containers: ListShape,
    /// `spec.volumes`.
    pub volumes: ListShape,
    /// `spec.hostNetwork`.
    pub host_network: bool,
}

/// Streams `spec` of the pod `object` through `walker`, keeping nothing of it but its shape.
pub fn walk_spec<'a, W: SpecWalker<'a>>(object: &'a str, walker: &mut W) -> Result<SpecShape, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(object);
    let shape = de.deserialize_map(PodSeed(walker))?;
    de.end()?;
    Ok(shape)
}

/// Errors when a key we read appears twice: the API server never sends that, and reading one
/// copy while Kubernetes honours the other would be a way around the checks.
fn once<E: de::Error>(seen: &mut u32, bit: u32, key: &'static str) -> Result<(), E> {
    if *seen & bit != 0 {
        return Err(E::duplicate_field(key));
    }
    *seen |= bit;
    Ok(())
}

/// `null`-or-value around a seed.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
    }
}

fn list_shape(len: Option<usize>) -> ListShape {
    ListShape { present: len.is_some(), len: len.unwrap_or(0) }
}

/// The pod object: only `spec` is read.
struct PodSeed<'w, W>(&'w mut W);

impl<'de, W: SpecWalker<'de>> Visitor<'de> for PodSeed<'_, W> {
    type Value = SpecShape;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pod object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecShape, A::Error> {
        let (mut shape, mut seen) = (SpecShape::default(), 0);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if &*key == "spec" {
                once(&mut seen, 1, "spec")?;
                shape = map.next_value_seed(Nullable(SpecSeed(&mut *self.0)))?.unwrap_or_default();
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(shape)
    }
}

struct SpecSeed<'w, W>(&'w mut W);

impl<'de, W: SpecWalker<'de>> DeserializeSeed<'de> for SpecSeed<'_, W> {
    type Value = SpecShape;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SpecShape, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, W: SpecWalker<'de>> Visitor<'de> for SpecSeed<'_, W> {
    type Value = SpecShape;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pod spec")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecShape, A::Error> {
        let (mut shape, mut seen) = (SpecShape { present: true, ..SpecShape::default() }, 0);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key {
                "containers" => {
                    once(&mut seen, 1, "containers")?;
                    let len = map.next_value_seed(Nullable(ContainersSeed { walker: &mut *self.0, list: List::Containers }))?;
                    shape.containers = list_shape(len);
                }
                "initContainers" => {
                    once(&mut seen, 2, "initContainers")?;
                    let len =
                        map.next_value_seed(Nullable(ContainersSeed { walker: &mut *self.0, list: List::InitContainers }))?;
                    shape.init_containers = list_shape(len);
                }
                "volumes" => {
                    once(&mut seen, 4, "volumes")?;
                    shape.volumes = list_shape(map.next_value_seed(Nullable(VolumesSeed(&mut *self.0)))?);
                }
                "hostNetwork" => {
                    once(&mut seen, 8, "hostNetwork")?;
                    shape.host_network = map.next_value::<Option<bool>>()?.unwrap_or(false);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(shape)
    }
}

/// `spec.containers` or `spec.initContainers`: each container in turn; the value is the count.
struct ContainersSeed<'w, W> {
    walker: &'w mut W,
    list: List,
}

impl<'de, W: SpecWalker<'de>> DeserializeSeed<'de> for ContainersSeed<'_, W> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, W: SpecWalker<'de>> Visitor<'de> for ContainersSeed<'_, W> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of containers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut c = 0;
        while seq.next_element_seed(ContainerSeed { walker: &mut *self.walker, list: self.list, c })?.is_some() {
            c += 1;
        }
        Ok(c)
    }
}

/// One container: its ports go to the walker as they are read, then the rest of it.
struct ContainerSeed<'w, W> {
    walker: &'w mut W,
    list: List,
    c: usize,
}

impl<'de, W: SpecWalker<'de>> DeserializeSeed<'de> for ContainerSeed<'_, W> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// `httpGet` / `tcpSocket` of a probe or hook: only the port.
#[derive(Deserialize)]
struct PortHolder<'a> {
    #[serde(default, borrow)]
    port: Option<IntOrString<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handler<'a> {
    #[serde(default, borrow)]
    http_get: Option<PortHolder<'a>>,
    #[serde(default, borrow)]
    tcp_socket: Option<PortHolder<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle<'a> {
    #[serde(default, borrow)]
    post_start: Option<Handler<'a>>,
    #[serde(default, borrow)]
    pre_stop: Option<Handler<'a>>,
}

#[derive(Deserialize)]
struct SecurityContext {
    #[serde(default)]
    privileged: Option<bool>,
}

/// A port given as a number or a name (`IntOrString`); only names are kept.
struct IntOrString<'a>(Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for IntOrString<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl<'de> Visitor<'de> for PortVisitor {
            type Value = IntOrString<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or name")
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(IntOrString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(IntOrString(None))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(IntOrString(Some(Text(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IntOrString(Some(Text(Cow::Owned(v.to_owned())))))
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

impl<'a> Handler<'a> {
    /// The named ports of this handler, `base` being the index of its `httpGet` pointer in
    /// [`PORT_REFERENCES`] (`tcpSocket` is the next one).
    fn named_ports(self, base: usize, out: &mut Vec<(usize, Text<'a>)>) {
        for (offset, holder) in [self.http_get, self.tcp_socket].into_iter().enumerate() {
            if let Some(name) = holder.and_then(|h| h.port).and_then(|p| p.0) {
                out.push((base + offset, name));
            }
        }
    }
}

impl<'de, W: SpecWalker<'de>> Visitor<'de> for ContainerSeed<'_, W> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a container")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut container, mut seen) = (ContainerView::default(), 0);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key {
                "name" => {
                    once(&mut seen, 1, "name")?;
                    container.name = map.next_value()?;
                }
                "ports" => {
                    once(&mut seen, 2, "ports")?;
                    map.next_value_seed(Nullable(PortsSeed { walker: &mut *self.walker, list: self.list, c: self.c }))?;
                }
                "restartPolicy" => {
                    once(&mut seen, 4, "restartPolicy")?;
                    container.restart_policy = map.next_value()?;
                }
                "securityContext" => {
                    once(&mut seen, 8, "securityContext")?;
                    let context: Option<SecurityContext> = map.next_value()?;
                    container.privileged = context.and_then(|c| c.privileged).unwrap_or(false);
                }
                probe @ ("livenessProbe" | "readinessProbe" | "startupProbe") => {
                    let (bit, base) = match probe {
                        "livenessProbe" => (16, 0),
                        "readinessProbe" => (32, 2),
                        _ => (64, 4),
                    };
                    once(&mut seen, bit, "probe")?;
                    if let Some(handler) = map.next_value::<Option<Handler<'de>>>()? {
                        handler.named_ports(base, &mut container.named_port_references);
                    }
                }
                "lifecycle" => {
                    once(&mut seen, 128, "lifecycle")?;
                    if let Some(lifecycle) = map.next_value::<Option<Lifecycle<'de>>>()? {
                        if let Some(hook) = lifecycle.post_start {
                            hook.named_ports(6, &mut container.named_port_references);
                        }
                        if let Some(hook) = lifecycle.pre_stop {
                            hook.named_ports(8, &mut container.named_port_references);
                        }
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        container.named_port_references.sort_by_key(|(index, _)| *index);
        self.walker.container(self.list, self.c, container);
        Ok(())
    }
}

/// `ports` of one container, each handed to the walker.
struct PortsSeed<'w, W> {
    walker: &'w mut W,
    list: List,
    c: usize,
}

impl<'de, W: SpecWalker<'de>> DeserializeSeed<'de> for PortsSeed<'_, W> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, W: SpecWalker<'de>> Visitor<'de> for PortsSeed<'_, W> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of ports")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut p = 0;
        while let Some(port) = seq.next_element::<PortView<'de>>()? {
            self.walker.port(self.list, self.c, p, port);
            p += 1;
        }
        Ok(())
    }
}

/// `spec.volumes`: each name handed to the walker; the value is the count.
struct VolumesSeed<'w, W>(&'w mut W);

impl<'de, W: SpecWalker<'de>> DeserializeSeed<'de> for VolumesSeed<'_, W> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, W: SpecWalker<'de>> Visitor<'de> for VolumesSeed<'_, W> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of volumes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        #[derive(Deserialize)]
        struct Volume<'a> {
            #[serde(default, borrow)]
            name: Option<Text<'a>>,
        }
        let mut len = 0;
        while let Some(volume) = seq.next_element::<Volume<'de>>()? {
            self.0.volume(volume.name.as_deref());
            len += 1;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record(Vec<String>);

    impl<'a> SpecWalker<'a> for Record {
        fn port(&mut self, list: List, c: usize, p: usize, port: PortView<'a>) {
            self.0.push(format!("{}[{c}].ports[{p}] {:?} {:?}", list.key(), port.name.as_deref(), port.container_port));
        }
        fn container(&mut self, list: List, c: usize, container: ContainerView<'a>) {
            let refs: Vec<String> =
                container.named_port_references.iter().map(|(i, n)| format!("{}={n}", PORT_REFERENCES[*i])).collect();
            self.0.push(format!("{}[{c}] {:?} {refs:?}", list.key(), container.name.as_deref()));
        }
        fn volume(&mut self, name: Option<&str>) {
            self.0.push(format!("volume {name:?}"));
        }
    }

    #[test]
    fn the_spec_is_streamed_in_document_order() {
        let pod = r#"{"spec": {
            "volumes": [{"name": "a"}, {}],
            "initContainers": [{"name": "init", "ports": null}],
            "containers": [{"ports": [{"name": "h\u0074tp", "containerPort": 80}, {}], "name": "web",
                            "readinessProbe": {"tcpSocket": {"port": 80}},
                            "livenessProbe": {"httpGet": {"port": "http"}},
                            "lifecycle": {"preStop": {"httpGet": {"port": "http"}}}}],
            "hostNetwork": true}, "status": {}}"#;
        let mut record = Record::default();
        let shape = walk_spec(pod, &mut record).unwrap();
        assert_eq!(
            record.0,
            [
                "volume Some(\"a\")",
                "volume None",
                "initContainers[0] Some(\"init\") []",
                "containers[0].ports[0] Some(\"http\") Some(80)",
                "containers[0].ports[1] None None",
                "containers[0] Some(\"web\") [\"/livenessProbe/httpGet/port=http\", \"/lifecycle/preStop/httpGet/port=http\"]",
            ]
        );
        assert_eq!(shape.volumes, ListShape { present: true, len: 2 });
        assert_eq!(shape.init_containers, ListShape { present: true, len: 1 });
        assert_eq!(shape.containers.len, 1);
        assert!(shape.host_network);

        let shape = walk_spec(r#"{"spec": {"containers": null}}"#, &mut Record::default()).unwrap();
        assert!(!shape.containers.present && !shape.volumes.present);
        assert!(!walk_spec(r#"{"metadata": {}}"#, &mut Record::default()).unwrap().present);
    }

    #[test]
    fn a_key_we_read_twice_is_an_error() {
        for pod in [
            r#"{"spec": {"containers": [], "containers": []}}"#,
            r#"{"spec": {"containers": [{"ports": [], "ports": []}]}}"#,
            r#"{"spec": {}, "spec": {}}"#,
        ] {
            let err = walk_spec(pod, &mut Record::default()).unwrap_err();
            assert!(err.to_string().contains("duplicate"), "{pod}: {err}");
        }
        assert!(walk_spec(r#"{"spec": {"containers": "x"}}"#, &mut Record::default()).is_err());
    }

    #[test]
    fn metadata_keeps_only_what_the_injector_reads() {
        let meta = metadata(
            r#"{"metadata": {"name": "p", "labels": {"app": "x", "trousseau.keysuite.app/inject": "true"},
                "annotations": {"trousseau.keysuite.app/port": "http", "trousseau.keysuite.app/a": "",
                "trousseau.keysuite.app/b": "", "other": "x", "kubectl.kubernetes.io/default-container": "web"}},
                "spec": {"containers": 1}}"#,
        )
        .unwrap();
        assert!(meta.present);
        assert_eq!(meta.name.as_deref(), Some("p"));
        assert_eq!(meta.inject_label.as_deref(), Some("true"));
        assert!(meta.annotations.present);
        assert_eq!(meta.annotations.get("trousseau.keysuite.app/port"), Some("http"));
        assert_eq!(meta.annotations.get("kubectl.kubernetes.io/default-container"), Some("web"));
        assert_eq!(meta.annotations.unknown_count, 2);

        assert!(!metadata(r#"{"spec": {}}"#).unwrap().present);
        assert!(!metadata(r#"{"metadata": null}"#).unwrap().present);
        let meta = metadata(r#"{"metadata": {"annotations": null}}"#).unwrap();
        assert!(meta.present && !meta.annotations.present);
    }
}
