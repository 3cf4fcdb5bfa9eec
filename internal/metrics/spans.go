package metrics

import "github.com/prometheus/client_golang/prometheus"

// SpanQueue is one trace exporter's queue at scrape time.
type SpanQueue struct {
	Exporter                  string // otel or langfuse
	Queued, Capacity          int
	Exported, Dropped, Failed uint64
}

// spanCollector reads the trace exporters' queues at scrape time.
type spanCollector struct {
	queues                                      func(yield func(SpanQueue))
	exported, dropped, failed, queued, capacity *prometheus.Desc
}

func newSpanCollector(name func(string) string, queues func(yield func(SpanQueue))) *spanCollector {
	l := []string{"exporter"}
	return &spanCollector{queues: queues,
		exported: prometheus.NewDesc(name("trace_spans_exported_total"), "Spans the trace exporter accepted.", l, nil),
		dropped:  prometheus.NewDesc(name("trace_spans_dropped_total"), "Spans dropped because the exporter's queue was full (the exporter is slow or down).", l, nil),
		failed:   prometheus.NewDesc(name("trace_spans_failed_total"), "Spans in batches the exporter refused or did not take within the export timeout.", l, nil),
		queued:   prometheus.NewDesc(name("trace_queue_spans"), "Spans waiting in the exporter's queue.", l, nil),
		capacity: prometheus.NewDesc(name("trace_queue_capacity"), "The most spans the exporter's queue holds; past it spans are dropped.", l, nil),
	}
}

func (c *spanCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.exported
	ch <- c.dropped
	ch <- c.failed
	ch <- c.queued
	ch <- c.capacity
}

func (c *spanCollector) Collect(ch chan<- prometheus.Metric) {
	c.queues(func(q SpanQueue) {
		ch <- prometheus.MustNewConstMetric(c.exported, prometheus.CounterValue, float64(q.Exported), q.Exporter)
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(q.Dropped), q.Exporter)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(q.Failed), q.Exporter)
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(q.Queued), q.Exporter)
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(q.Capacity), q.Exporter)
	})
}
