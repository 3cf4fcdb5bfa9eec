package main

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// logWriter batches log lines: one write syscall per flush instead of one
// per request line (measured at ~15 µs of a request's CPU). It flushes
// every 100 ms, when 32 KiB are waiting, and on Close; a crash loses at
// most the last 100 ms of log lines.
type logWriter struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newLogWriter(out io.Writer) *logWriter {
	l := &logWriter{w: bufio.NewWriterSize(out, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				l.mu.Lock()
				_ = l.w.Flush()
				l.mu.Unlock()
			}
		}
	}()
	return l
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.w.Write(p)
	if l.w.Buffered() >= 32<<10 {
		err = l.w.Flush()
	}
	return n, err
}

// Close flushes what is left and stops the flusher.
func (l *logWriter) Close() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}
