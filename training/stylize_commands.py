"""CLI for `adu stylize`: render a dataset's photos as illustrations (posters, drawings,
signs, screens), one output domain folder per family.

Light module: the renderers (numpy, OpenCV) are imported only when the command runs.
"""
from adu_perception.cli import CommandError, csv_list


def stylize_command(args) -> int:
    import cv2

    from .stylize import FAMILIES, contact_sheet, first_images_per_class, stylize_folder

    families = csv_list(args.families) or list(FAMILIES)
    domains = csv_list(args.domains)
    if not domains:
        raise CommandError("--domains names no domain")
    from pathlib import Path

    if Path(args.out).exists() and (not Path(args.out).is_dir() or any(Path(args.out).iterdir())) \
            and not args.force:
        raise CommandError(f"--out {args.out} exists and is not an empty folder: choose another, or "
                           f"--force to write into it (files of the same name are replaced)")
    if args.contact_sheet:  # checked before minutes of rendering
        sheet_path = Path(args.contact_sheet)
        if sheet_path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}:
            raise CommandError(f"--contact-sheet {args.contact_sheet}: name an image file (.png, .jpg, ...)")
        if not sheet_path.parent.is_dir():
            raise CommandError(f"--contact-sheet {args.contact_sheet}: folder {sheet_path.parent} not found")
    counts = stylize_folder(args.data, args.out, families, domains, args.seed,
                            split_file=args.split_file, split=args.split, size=args.size)
    for family in families:
        print(f"{family}: {counts['written'][family]} images -> {args.out}/{family}")
    print(f"{counts['images']} source images from {', '.join(domains)}; "
          f"{counts['skipped']} unreadable skipped")
    if args.contact_sheet:
        images = first_images_per_class(args.data, domains, 6, args.split_file, args.split)
        sheet = contact_sheet(images, families, args.seed)
        if not cv2.imwrite(args.contact_sheet, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise CommandError(f"could not write the contact sheet {args.contact_sheet}")
        print(f"contact sheet: {args.contact_sheet}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "stylize", help="render photos as illustrations (print, vector, ink, paint, comic, "
        "pictogram, screen, billboard) for forgotten-domain data",
        description="Reads <data>/<domain>/<class>/* images of the chosen domains and writes "
        "<out>/<family>/<class>/<stem>.png for every family (<domain>-<stem>-<suffix>.png when "
        "that name is taken by another source image): a dataset whose domains are the "
        "illustration families. Seeded: the same seed gives the same images.")
    parser.add_argument("--data", required=True, help="dataset root <root>/<domain>/<class>/*")
    parser.add_argument("--out", required=True, help="output root, one domain folder per family")
    parser.add_argument("--families", help="comma-separated families (default: all: halftone_print,"
                        "flat_vector,line_ink,painterly,comic,pictogram,screen,billboard_print)")
    parser.add_argument("--domains", default="photo",
                        help="comma-separated source domains (default: %(default)s)")
    parser.add_argument("--split-file", help="file of 'domain/class/file<TAB>split' lines "
                        "restricting which images are rendered")
    parser.add_argument("--split", default="downstream",
                        help="split name to use from --split-file (default: %(default)s)")
    parser.add_argument("--size", type=int, help="resize + centre-crop to SIZE x SIZE first "
                        "(default: keep each image's size)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--force", action="store_true", help="write into an --out that already "
                        "holds files (same names are replaced)")
    parser.add_argument("--contact-sheet", metavar="PNG", help="also write a contact sheet of "
                        "the first image of up to 6 classes, original + every family")
    parser.set_defaults(func=stylize_command)
