// Live views: a tick every second, and never more than one request chain in flight per view.
//
// When the broker is slow, a tick that finds the previous refresh still pending is skipped rather than
// queued, so the page shows the newest answer as soon as it comes and the browser never piles up
// requests (a refresh that overtakes its predecessor cannot happen either). A view leaving the screen
// stops its timer and aborts what it has in flight.

export const TICK_MS = 1000;

export class Live {
  constructor(refresh, {interval = TICK_MS} = {}) {
    this.refresh = refresh;
    this.interval = interval;
    this.pending = false;
    this.stopped = false;
    this.skipped = 0;
    this.controller = new AbortController();
    this.timer = null;
  }

  start() {
    this.tick();
    this.timer = setInterval(() => this.tick(), this.interval);
    return this;
  }

  // Run now (after an action), unless a refresh is already on its way.
  async tick() {
    if (this.stopped) return;
    if (this.pending) {
      this.skipped += 1;
      return;
    }
    this.pending = true;
    try {
      await this.refresh(this.controller.signal);
    } catch (error) {
      if (error.name !== 'AbortError' && this.onError) this.onError(error);
    } finally {
      this.pending = false;
    }
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    this.controller.abort();
  }
}
