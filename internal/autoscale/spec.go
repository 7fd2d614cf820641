package autoscale

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// FromSpec converts a ModelServing's spec.autoscaling (the API's integers
// and percents) into a Policy; unset fields stay zero for Default. Each
// role instance counts as one engine (enginesPerGroup is the caller's:
// the instances of one group's serving roles).
func FromSpec(s *servingv1.AutoscalingSpec, enginesPerGroup int) Policy {
	p := Policy{
		MaxGroups:              int(s.MaxGroups),
		MinGroups:              1,
		EnginesPerGroup:        enginesPerGroup,
		StableWindow:           dur(s.StableWindow),
		PanicWindow:            dur(s.PanicWindow),
		ScaleUpStabilization:   dur(s.ScaleUp.StabilizationWindow),
		ScaleUpPeriod:          dur(s.ScaleUp.Period),
		ScaleDownStabilization: dur(s.ScaleDown.StabilizationWindow),
		ScaleDownPeriod:        dur(s.ScaleDown.Period),
		ColdStart:              dur(s.ColdStart),
		IdleToZero:             dur(s.IdleToZero),
		MaxScaleUpGroups:       num(s.ScaleUp.MaxGroups),
		MaxScaleDownGroups:     num(s.ScaleDown.MaxGroups),
	}
	if s.MinGroups != nil {
		p.MinGroups = int(*s.MinGroups)
	}
	if s.PanicThresholdPercent != nil {
		p.PanicThreshold = float64(*s.PanicThresholdPercent) / 100
	}
	if s.PanicWindow != nil && s.PanicWindow.Duration == 0 {
		p.PanicThreshold = -1 // panicWindow: 0s turns panic mode off
	}
	if s.Targets != nil {
		p.Targets = targets(*s.Targets)
	}
	if s.PD != nil {
		p.PD = &PDPolicy{Prefill: targets(s.PD.Prefill), Decode: targets(s.PD.Decode)}
		if s.PD.MinRatioPercent != nil {
			p.PD.MinRatio = float64(*s.PD.MinRatioPercent) / 100
		}
		if s.PD.MaxRatioPercent != nil {
			p.PD.MaxRatio = float64(*s.PD.MaxRatioPercent) / 100
		}
	}
	return p
}

func targets(t servingv1.AutoscalingTargets) Targets {
	pct := func(v *int32) float64 {
		if v == nil {
			return 0
		}
		return float64(*v) / 100
	}
	return Targets{
		WaitingPerEngine:         float64(num(t.WaitingPerEngine)),
		RunningPerEngine:         float64(num(t.RunningPerEngine)),
		KVUsage:                  pct(t.KVUsagePercent),
		PrefillTokensPerEngine:   float64(num(t.PrefillTokensPerEngine)),
		TokensPerSecondPerEngine: float64(num(t.TokensPerSecondPerEngine)),
		RequestsPerSecondPerEngine: func() float64 {
			if t.RequestsPerSecondPerEngineMilli == nil {
				return 0
			}
			return float64(*t.RequestsPerSecondPerEngineMilli) / 1000
		}(),
		Attainment: pct(t.AttainmentPercent),
	}
}

func dur(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}

func num(v *int32) int {
	if v == nil {
		return 0
	}
	return int(*v)
}
