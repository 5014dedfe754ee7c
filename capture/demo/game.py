"""A small pygame game that reacts visibly to keys, mouse motion, clicks and the wheel."""

from __future__ import annotations

import argparse
import os
import signal

WINDOW_CLASS = "capture-demo-game"
TITLE = "capture demo game"
SHOWN_KEYS = {"K_w": "w", "K_a": "a", "K_s": "s", "K_d": "d", "K_SPACE": "space",
              "K_UP": "up", "K_DOWN": "down", "K_LEFT": "left", "K_RIGHT": "right"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=60)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))

    os.environ.setdefault("SDL_VIDEO_X11_WMCLASS", WINDOW_CLASS)
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
    import pygame

    pygame.display.init()
    pygame.font.init()
    screen = pygame.display.set_mode((width, height))
    pygame.display.set_caption(TITLE)
    font = pygame.font.Font(None, 22)
    clock = pygame.time.Clock()
    running = True

    def stop(_signum: int, _frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    player = [width / 2, height / 2]
    crosshair = [width / 2, height / 2]
    hue = 0
    radius = 12
    shots: list[tuple[int, int, int]] = []  # x, y, frames left
    frame = 0
    while running:
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                running = False
            elif event.type == pygame.MOUSEMOTION:
                crosshair[0] = max(0, min(width, crosshair[0] + event.rel[0]))
                crosshair[1] = max(0, min(height, crosshair[1] + event.rel[1]))
            elif event.type == pygame.MOUSEBUTTONDOWN and event.button in (1, 3):
                shots.append((int(crosshair[0]), int(crosshair[1]), 20))
            elif event.type == pygame.MOUSEWHEEL:
                radius = max(4, min(60, radius + 2 * event.y))
                hue = (hue + 30 * event.x) % 360
        keys = pygame.key.get_pressed()
        speed = 4
        player[0] += speed * ((keys[pygame.K_d] or keys[pygame.K_RIGHT])
                              - (keys[pygame.K_a] or keys[pygame.K_LEFT]))
        player[1] += speed * ((keys[pygame.K_s] or keys[pygame.K_DOWN])
                              - (keys[pygame.K_w] or keys[pygame.K_UP]))
        player[0] = max(radius, min(width - radius, player[0]))
        player[1] = max(radius, min(height - radius, player[1]))
        if keys[pygame.K_SPACE]:
            hue = (hue + 3) % 360

        screen.fill((24, 28, 36))
        for x in range(0, width, 40):
            pygame.draw.line(screen, (40, 46, 58), (x, 0), (x, height))
        for y in range(0, height, 40):
            pygame.draw.line(screen, (40, 46, 58), (0, y), (width, y))
        colour = pygame.Color(0)
        colour.hsva = (hue, 80, 95, 100)
        pygame.draw.circle(screen, colour, (int(player[0]), int(player[1])), radius)
        shots = [(x, y, n - 1) for x, y, n in shots if n > 1]
        for x, y, n in shots:
            pygame.draw.circle(screen, (255, 220, 80), (x, y), 30 - n, 3)
        cx, cy = int(crosshair[0]), int(crosshair[1])
        pygame.draw.line(screen, (240, 240, 240), (cx - 10, cy), (cx + 10, cy), 2)
        pygame.draw.line(screen, (240, 240, 240), (cx, cy - 10), (cx, cy + 10), 2)
        held = [name for key, name in SHOWN_KEYS.items() if keys[getattr(pygame, key)]]
        text = font.render(f"frame {frame}  keys: {' '.join(held) or '-'}", True, (220, 220, 220))
        screen.blit(text, (8, 8))
        pygame.display.flip()
        frame += 1
        clock.tick(args.fps)
    pygame.quit()


if __name__ == "__main__":
    main()
