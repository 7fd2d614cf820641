package discovery

import (
	"context"
	"fmt"

	"k8s.io/client-go/tools/cache"
)

// informerFactory is what the typed and the dynamic shared informer
// factories both offer.
type informerFactory interface {
	Start(stopCh <-chan struct{})
	Shutdown()
}

// follow starts factory, waits for informer's cache, then calls publish
// once and again after every add, update or delete (changes arriving while
// publish runs coalesce into one more call), until ctx ends. publish runs
// on the caller's goroutine only.
func follow(ctx context.Context, what string, factory informerFactory, informer cache.SharedIndexInformer, publish func()) error {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil
	}
	publish()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			publish()
		}
	}
}
