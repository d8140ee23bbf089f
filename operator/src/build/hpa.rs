//! The API HorizontalPodAutoscaler (autoscaling/v2): scales the Deployment on average CPU utilization.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::StoreIdentity;
use crate::crd::AutoscalingSpec;

pub const DEFAULT_TARGET_CPU: i32 = 70;

pub fn build_api_autoscaler(
    identity: &StoreIdentity,
    autoscaling: &AutoscalingSpec,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: identity.metadata(identity.api_name(), "api"),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: identity.api_name(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(
                            autoscaling
                                .target_cpu_utilization_percentage
                                .unwrap_or(DEFAULT_TARGET_CPU),
                        ),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}
