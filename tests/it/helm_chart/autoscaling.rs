//! `autoscaling.enabled`: a HorizontalPodAutoscaler owns the proxy's replica count, and what
//! could not work with it — memory sessions, no CPU request, a disruption budget that forbids
//! every eviction — is refused when the chart renders, named.

use serde_json::{json, Value};

use super::{tools, Render, STANDALONE};

const AUTOSCALING: &str = "helm/trousseau-proxy/ci/standalone-autoscaling-values.yaml";

#[test]
fn the_autoscaler_owns_the_replica_count_on_cpu() {
    let Some(tools) = tools() else { return };
    let manifest = Render::with(AUTOSCALING).objects(&tools);
    let deployment = manifest.one("Deployment");
    let hpa = manifest.one("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]})
    );
    assert_eq!((&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]), (&json!(3), &json!(12)));
    assert_eq!(
        hpa["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}])
    );
    // No `replicas`: an upgrade would otherwise reset the count the autoscaler chose.
    assert!(deployment["spec"].get("replicas").is_none(), "{}", deployment["spec"]);
    // Utilization is a share of the request, so the request is there.
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], "100m");
    // Several replicas from the start: spread over nodes, and a budget that still lets one go.
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "kubernetes.io/hostname");
    let pdb = manifest.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);

    // Starting from one replica: no budget (it would block drains at the minimum), the spread stays
    // (the autoscaler adds replicas).
    let from_one = Render::with(AUTOSCALING).set("autoscaling.minReplicas=1").objects(&tools);
    assert!(from_one.of_kind("PodDisruptionBudget").is_empty(), "{:?}", from_one.kinds());
    assert!(from_one.one("Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"].is_array());

    // Without the autoscaler: replicaCount, and no HorizontalPodAutoscaler.
    let fixed = Render::with(STANDALONE).set("replicaCount=4").objects(&tools);
    assert!(fixed.of_kind("HorizontalPodAutoscaler").is_empty());
    assert_eq!(fixed.one("Deployment")["spec"]["replicas"], 4);
    let fixed_values = Render::with(AUTOSCALING).set("autoscaling.enabled=false").set("replicaCount=3").objects(&tools);
    assert!(fixed_values.of_kind("HorizontalPodAutoscaler").is_empty());
    assert_eq!(fixed_values.one("Deployment")["spec"]["replicas"], 3);
}

#[test]
fn the_autoscaler_is_refused_where_it_could_not_work() {
    let Some(tools) = tools() else { return };
    let memory = "autoscaling.enabled is refused with config.session.store: memory";
    let refused: &[(&str, &[&str], &str)] = &[
        // Memory sessions live in one replica: whatever the bounds, scaling loses them.
        (STANDALONE, &["autoscaling.enabled=true", "config.session.store=memory"], memory),
        (STANDALONE, &["autoscaling.enabled=true", "config.session.store=memory", "autoscaling.minReplicas=1", "autoscaling.maxReplicas=1"], memory),
        (AUTOSCALING, &["config.session.store=memory"], memory),
        (AUTOSCALING, &["autoscaling.maxReplicas=2"], "autoscaling.maxReplicas (2) is below autoscaling.minReplicas (3)"),
        (AUTOSCALING, &["resources.requests.cpu=null"], "set resources.requests.cpu"),
        // A budget that allows no eviction at the fewest replicas: no node could be drained.
        (AUTOSCALING, &["podDisruptionBudget.minAvailable=3"], "podDisruptionBudget.minAvailable 3 allows no eviction with autoscaling.minReplicas 3"),
        (AUTOSCALING, &["podDisruptionBudget.minAvailable=100%"], "podDisruptionBudget.minAvailable 100% allows no eviction"),
        (STANDALONE, &["replicaCount=2", "podDisruptionBudget.minAvailable=2"], "podDisruptionBudget.minAvailable 2 allows no eviction with replicaCount 2"),
    ];
    for (values, sets, named) in refused {
        let render = sets.iter().fold(Render::with(values), |r, s| r.set(s));
        let err = render.yaml(&tools).expect_err(&format!("{sets:?}"));
        assert!(err.contains(named), "{sets:?}: the error should say {named:?}:\n{err}");
    }
    // What stays allowed: memory sessions on one fixed replica, cookie and Redis sessions scaled,
    // a budget below the floor or a percentage under 100%, and no budget at all.
    let allowed: &[(&str, &[&str])] = &[
        (STANDALONE, &["config.session.store=memory", "replicaCount=1"]),
        (STANDALONE, &["autoscaling.enabled=true"]),
        (AUTOSCALING, &["config.session.store=redis"]),
        (AUTOSCALING, &["podDisruptionBudget.minAvailable=50%"]),
        (AUTOSCALING, &["podDisruptionBudget.enabled=false", "podDisruptionBudget.minAvailable=3"]),
    ];
    for (values, sets) in allowed {
        let manifest = sets.iter().fold(Render::with(values), |r, s| r.set(s)).objects(&tools);
        let autoscaled = sets.iter().any(|s| s.starts_with("autoscaling.enabled=true")) || *values == AUTOSCALING;
        assert_eq!(manifest.of_kind("HorizontalPodAutoscaler").len(), usize::from(autoscaled), "{sets:?}");
    }
    // The default values' HorizontalPodAutoscaler: 2 to 10 replicas at 75% of the 25m request.
    let defaults = Render::with(STANDALONE).set("autoscaling.enabled=true").objects(&tools);
    let spec: &Value = &defaults.one("HorizontalPodAutoscaler")["spec"];
    assert_eq!((&spec["minReplicas"], &spec["maxReplicas"]), (&json!(2), &json!(10)));
    assert_eq!(spec["metrics"][0]["resource"]["target"]["averageUtilization"], 75);
}
