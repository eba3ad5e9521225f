//go:build linux

package iopool

// closeHook is work that Close runs for another object tied to the pool
// (a GroupListener closes the pool's listener with it).
type closeHook struct{ fn func() }

// addCloseHook makes Close run fn after the pool's tasks have ended and
// before its fds are released. It returns a function that removes the hook,
// and false (adding nothing) if the pool is already closing.
func (p *Pool) addCloseHook(fn func()) (remove func(), ok bool) {
	h := &closeHook{fn: fn}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing || p.closed {
		return nil, false
	}
	p.onClose = append(p.onClose, h)
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, o := range p.onClose {
			if o == h {
				p.onClose = append(p.onClose[:i], p.onClose[i+1:]...)
				return
			}
		}
	}, true
}
