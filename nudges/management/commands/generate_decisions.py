"""python manage.py generate_decisions --slot HH:MM [--day YYYY-MM-DD] [--chunk-size N]
[--wait | --inline]"""

import datetime as dt
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from nudges.services.batch import CHUNK_SIZE, batch_chunk, batch_plan, batch_progress
from nudges.tasks import decisions_batch_chunk


class Command(BaseCommand):
    help = (
        "Decide one slot for every patient (its local time on the day, in each patient's "
        "time zone), split into Celery tasks that the workers share."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slot", required=True, help="local time of the slot, HH:MM")
        parser.add_argument("--day", help="YYYY-MM-DD (default: today, UTC)")
        parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
        how = parser.add_mutually_exclusive_group()
        how.add_argument("--wait", action="store_true", help="wait for the workers, with progress")
        how.add_argument("--inline", action="store_true", help="decide here, without workers")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            slot = dt.time.fromisoformat(options["slot"])
            day = dt.date.fromisoformat(options["day"]) if options["day"] else timezone.now().date()
        except ValueError:
            raise CommandError("--slot must be HH:MM and --day YYYY-MM-DD.") from None
        if not 1 <= options["chunk_size"] <= 10_000:
            raise CommandError("--chunk-size must be between 1 and 10,000.")
        started = time.perf_counter()  # the time reported includes the planning
        run = batch_plan(slot=slot, day=day, chunk_size=options["chunk_size"])
        self.stdout.write(f"Run {run.pk}: {run.patients} patients in {len(run.chunks)} chunks.")
        if options["inline"]:
            for index in tqdm(range(len(run.chunks)), desc="Chunks"):
                batch_chunk(run_id=run.pk, chunk=index)
        else:
            for index in range(len(run.chunks)):
                decisions_batch_chunk.delay(str(run.pk), index)
            if not options["wait"]:
                self.stdout.write("Queued; the workers decide the chunks.")
                return
            with tqdm(total=len(run.chunks), desc="Chunks") as bar:
                done = 0
                while done < len(run.chunks):
                    time.sleep(0.5)
                    now_done, _ = batch_progress(run)
                    bar.update(now_done - done)
                    done = now_done
        chunks, decisions = batch_progress(run)
        seconds = time.perf_counter() - started
        self.stdout.write(
            self.style.SUCCESS(f"{decisions} decisions in {chunks} chunks, {seconds:.1f} s.")
        )
